"""`Runtime`: everything one worker process runs tasks with, made once and closed once.

A Runtime holds the operator's settings (read when it is made), the plugin manager and the
registry of dialects it found, the connection pools, the cache of checked statements and the
deadline watchdog. `Runtime.run(task_input)` is the one query path, `Runtime.execute` the one
write path; the CLI, the engine
bindings and `sqladapter.run_query` all go through one. Tests make their own, with their own
settings and plugin manager, and close it.

`run_query` uses a default Runtime made on first use from the process's environment: the one
process-wide object in the package, replaced only by `close_default()`.
"""

from __future__ import annotations

import os
import threading
from collections import abc
from typing import Any, Mapping

import pluggy

from . import execute, query
from .connections import Pools, Source
from .deadlines import Watchdog
from .plugins import Registry, get_plugin_manager, list_plugins
from .settings import Settings
from .statements import StatementCache

__all__ = ["Runtime", "close_default", "default", "run_query"]


class Runtime:
    """Settings, plugins, pools, statement cache and watchdog of one worker process.

    `Runtime()` reads the settings and named connections from the environment and loads the
    installed plugins; pass `settings`, `plugin_manager` or `environ` to choose them instead.
    Use it as a context manager, or call `close()`: that closes every pooled connection.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.settings = settings if settings is not None else Settings.from_env(self.environ)
        self.plugin_manager = plugin_manager if plugin_manager is not None else get_plugin_manager(self.environ)
        self.registry = Registry(self.plugin_manager).collect()
        self.pools = Pools(self.settings, self.registry, self.environ)
        self.statements = StatementCache()
        self.watchdog = Watchdog()

    def run(self, task_input: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Run one read-only query described by a task input; return the JSON-ready output.

        Accepts the task's input as a mapping, the same fields as keyword arguments, or both: a
        keyword field overrides the mapping's (`run(task, max_rows=1)`), and the mapping is
        left as it was. Raises a `SqlAdapterError` subclass whose `retryable` says whether to
        run it again.
        """
        if task_input is None:
            task_input = fields
        elif fields and isinstance(task_input, abc.Mapping):
            task_input = {**task_input, **fields}
        self.pools.sweep()
        return query.run(self, task_input)

    def execute(
        self, task_input: Mapping[str, Any] | None = None, /, *, default_key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Run one write (`execute_sql`) described by a task input; return the JSON-ready output.

        Only on a named connection the operator marked writable; the statements run in one
        transaction, committed with their idempotency key (the input's `idempotency_key`, else
        `default_key`, the engine's key for this task) in the database's ledger. A key already
        committed returns the stored output with `replayed: true` and runs nothing.
        """
        if task_input is None:
            task_input = fields
        elif fields and isinstance(task_input, abc.Mapping):
            task_input = {**task_input, **fields}
        self.pools.sweep()
        return execute.run(self, task_input, default_key=default_key)

    def resolve(self, connection_string: str | None = None, connection: str | None = None, *, read_only: bool = True) -> Source:
        """The dialect and pooled engine for one connection string or connection name."""
        return self.pools.resolve(connection_string, connection, read_only=read_only)

    def plugins(self, include_builtins: bool = False) -> list[dict[str, Any]]:
        """The plugins this runtime loaded, as `sqladapter plugins` prints them."""
        return list_plugins(self.registry, include_builtins)

    def close(self) -> None:
        """Close every pooled connection and stop the watchdog; the runtime can be used again after."""
        self.pools.close()
        self.statements.clear()
        self.watchdog.close()
        for dialect in self.registry.by_name.values():
            dialect.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Runtime dialects={sorted(self.registry.by_name)} data_dir={str(self.settings.data_dir)!r}>"


# The default Runtime behind run_query: a list holding at most one, so that making and replacing
# it is a change of its contents under the lock, not a rebinding of a module global.
_default: list[Runtime] = []
_default_lock = threading.Lock()


def default() -> Runtime:
    """The process's default Runtime, made from the environment on first use."""
    if _default:
        return _default[0]
    with _default_lock:
        if not _default:
            _default.append(Runtime())
        return _default[0]


def close_default() -> None:
    """Close the default Runtime; the next `run_query` makes a new one from the environment."""
    with _default_lock:
        runtime = _default.pop() if _default else None
    if runtime is not None:
        runtime.close()


def run_query(task_input: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
    """Run one read-only query on the default Runtime (see `Runtime.run`)."""
    return default().run(task_input, **fields)
