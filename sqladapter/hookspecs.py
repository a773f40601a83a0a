"""The plugin seam: markers named `sqladapter` and the one hook.

How to write a dialect plugin (a distribution of its own, one module)::

    # sqladapter_oracle.py
    from sqladapter import Dialect, hookimpl

    class Oracle(Dialect):
        name = "oracle"
        backends = ("oracle", "oracle+oracledb")
        drivername = "oracle+oracledb"
        grammar = "oracle"
        paramstyles = ("named",)

    @hookimpl
    def sqladapter_register_dialects(register):
        register(Oracle())

    # pyproject.toml
    [project.entry-points.sqladapter]
    oracle = "sqladapter_oracle"

`pip install` the distribution and `sqladapter plugins` lists it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from .dialect import Dialect

NAME = "sqladapter"

hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)


@hookspec
def sqladapter_register_dialects(register: Callable[[Dialect], None]) -> None:
    """Register the database dialects this plugin provides.

    :param register: call it once per dialect with a `Dialect` instance. Registering a
        dialect whose name, URL scheme or file extension another dialect already claims
        raises an error naming both plugins.
    """
