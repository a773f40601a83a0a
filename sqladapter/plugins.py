"""The plugin manager factory and the registry of dialects the plugins register.

Nothing here is made at import: a `Runtime` makes its own manager (or takes one, as tests do)
and its own `Registry` from it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import pluggy

from . import hookspecs
from .default_plugins import DEFAULT_PLUGINS
from .dialect import Dialect
from .errors import UnknownDialectError

ENTRY_POINT_GROUP = "sqladapter"

# Where users look for a dialect that is not installed, by URL scheme.
KNOWN_PACKAGES = MappingProxyType(
    {
        "duckdb": "sqladapter-duckdb",
        "mysql": "sqladapter-mysql",
        "mariadb": "sqladapter-mysql",
        "postgresql": "sqladapter-postgresql",
        "postgres": "sqladapter-postgresql",
    }
)


def get_plugin_manager(environ: Mapping[str, str] = os.environ) -> pluggy.PluginManager:
    """A new manager with the built-in plugins and every installed plugin not disabled by
    SQLADAPTER_DISABLE_PLUGINS."""
    pm = pluggy.PluginManager(hookspecs.NAME)
    pm.add_hookspecs(hookspecs)
    for name in _disabled(environ):
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        name = module_name.rsplit(".", 1)[-1]
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(module_name), name=name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def _disabled(environ: Mapping[str, str]) -> list[str]:
    return [n.strip() for n in environ.get("SQLADAPTER_DISABLE_PLUGINS", "").split(",") if n.strip()]


@dataclass
class Registry:
    """The dialects registered by a plugin manager, indexed by name, URL scheme and extension."""

    pm: pluggy.PluginManager
    by_name: dict[str, Dialect] = field(default_factory=dict)
    by_backend: dict[str, Dialect] = field(default_factory=dict)
    by_extension: dict[str, Dialect] = field(default_factory=dict)
    plugin_of: dict[str, str] = field(default_factory=dict)

    def collect(self) -> Registry:
        for impl in self.pm.hook.sqladapter_register_dialects.get_hookimpls():
            plugin_name = impl.plugin_name
            impl.function(register=lambda dialect, _p=plugin_name: self.add(dialect, _p))
        return self

    def add(self, dialect: Dialect, plugin_name: str) -> None:
        if not isinstance(dialect, Dialect):
            raise TypeError(f"plugin {plugin_name!r} registered {dialect!r}, which is not a sqladapter.Dialect")
        if "driver" in vars(type(dialect)) or hasattr(dialect, "keeps_connection"):
            raise TypeError(
                f"plugin {plugin_name!r}: {type(dialect).__name__} uses names sqladapter no longer reads: "
                "rename `driver` to `drivername` and `keeps_connection` to `thread_may_keep`"
            )
        if not dialect.name or not dialect.backends or not dialect.drivername:
            raise ValueError(f"plugin {plugin_name!r}: a Dialect needs name, backends and drivername")
        claims = [(self.by_name, dialect.name, "name")]
        claims += [(self.by_backend, b, "URL scheme") for b in dialect.backends]
        claims += [(self.by_extension, e.lower(), "file extension") for e in dialect.extensions]
        for index, key, what in claims:
            if key in index:
                other = self.plugin_of[index[key].name]
                raise ValueError(f"{what} {key!r} is claimed by both plugin {other!r} and plugin {plugin_name!r}")
        for index, key, _ in claims:
            index[key] = dialect
        self.plugin_of[dialect.name] = plugin_name

    def for_backend(self, drivername: str) -> Dialect:
        dialect = self.by_backend.get(drivername)
        if dialect is None:
            backend = drivername.split("+", 1)[0]
            package = KNOWN_PACKAGES.get(backend, f"sqladapter-{backend}")
            raise UnknownDialectError(
                f"no dialect claims '{drivername}://'; installed: {self.describe()}; try: pip install {package}"
            )
        return dialect

    def for_extension(self, path: str) -> Dialect:
        lowered = path.lower()
        for extension, dialect in self.by_extension.items():
            if lowered.endswith(extension):
                return dialect
        extensions = ", ".join(sorted(self.by_extension)) or "none"
        raise UnknownDialectError(
            f"no dialect claims the file {path!r} by its extension (claimed: {extensions}); "
            "pass a URL such as sqlite:///path, or install the plugin for that file type"
        )

    def describe(self) -> str:
        return ", ".join(f"{d.name} ({', '.join(d.backends)})" for d in sorted(self.by_name.values(), key=lambda d: d.name))


def list_plugins(reg: Registry, include_builtins: bool = False) -> list[dict[str, Any]]:
    """A registry's plugins as `sqladapter plugins` prints them."""
    versions = {id(plugin): dist.version for plugin, dist in reg.pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(reg.pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked by SQLADAPTER_DISABLE_PLUGINS
            continue
        builtin = getattr(plugin, "__name__", "").startswith("sqladapter.default_plugins.")
        if builtin and not include_builtins:
            continue
        out.append(
            {
                "name": name,
                "version": versions.get(id(plugin)),
                "builtin": builtin,
                "hooks": [h.name for h in reg.pm.get_hookcallers(plugin) or []],
                "dialects": sorted(d for d, p in reg.plugin_of.items() if p == name),
            }
        )
    return out
