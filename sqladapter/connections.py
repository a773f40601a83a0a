"""Connection strings to (dialect, engine): URLs, bare file paths and named connections.

Inline connection strings come from task input, so whoever starts a workflow controls them:
file paths are confined to the data directory and passwords are refused. Named connections
come from the operator (environment or a TOML file) and are trusted as written.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import plugins
from .errors import ConnectionConfigError, redact
from .settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .dialect import Dialect

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_MEMORY = ("", ":memory:")


@dataclass(frozen=True)
class Target:
    """A resolved connection: the dialect, its pooled engine, and what must never be shown."""

    dialect: Dialect
    url: URL
    engine: Engine
    #: Strings to redact from any message about this connection (the password).
    secrets: tuple[str, ...]

    @property
    def label(self) -> str:
        """The URL with its password hidden, safe for logs and errors."""
        return self.url.render_as_string(hide_password=True)


def resolve(
    connection_string: str | None = None,
    connection: str | None = None,
    *,
    settings: Settings,
    read_only: bool = True,
) -> Target:
    """Resolve exactly one of an inline connection string or a connection name."""
    if (connection_string is None) == (connection is None):
        raise ConnectionConfigError(
            "give exactly one of connection_string (a URL or a database file path) "
            "or connection (the name of a connection configured on the worker)"
        )
    if connection is not None:
        text, inline = named_connection(connection, settings), False
    else:
        text, inline = connection_string, True
    target = _resolve(text, inline, read_only, settings.data_dir, settings.allow_inline_credentials)
    if read_only and target.dialect.extensions and target.url.database not in _MEMORY:
        if not os.path.exists(target.url.database):
            name = connection or connection_string
            raise ConnectionConfigError(
                f"database file {name!r} does not exist in the data directory {settings.data_dir}; "
                f"create it with: sqladapter seed {name}"
            )
    return target


def named_connection(name: str, settings: Settings) -> str:
    """The connection string an operator configured under `name`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConnectionConfigError(
            "connection must be a name of letters, digits, '_' or '-' (starting with a letter), "
            "configured on the worker as SQLADAPTER_CONNECTION_<NAME>"
        )
    variable = "SQLADAPTER_CONNECTION_" + name.upper().replace("-", "_")
    value = os.environ.get(variable)
    if value is None and settings.connections_file is not None:
        value = _connections_file(str(settings.connections_file)).get(name)
    if not value:
        where = f"set {variable} on the worker"
        if settings.connections_file is not None:
            where += f" or add {name!r} under [connections] in {settings.connections_file}"
        raise ConnectionConfigError(f"no connection named {name!r}: {where}")
    return value


def _connections_file(path: str) -> dict[str, str]:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ConnectionConfigError(f"cannot read SQLADAPTER_CONNECTIONS_FILE {path}: {exc.strerror}") from None
    return _load_connections_file(path, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_connections_file(path: str, _mtime_ns: int) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f).get("connections", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConnectionConfigError(f"cannot read SQLADAPTER_CONNECTIONS_FILE {path}: {exc}") from None
    return {str(k): str(v) for k, v in table.items()}


@functools.lru_cache(maxsize=256)
def _resolve(text: str, inline: bool, read_only: bool, data_dir: Path, allow_credentials: bool) -> Target:
    # Cached: a workflow sends the same connection string again and again, and resolving it
    # touches the file system. Errors are not cached.
    if not isinstance(text, str) or not text.strip():
        raise ConnectionConfigError("connection_string is empty: give a URL or a database file path")
    registry = plugins.registry()
    if _SCHEME.match(text):
        try:
            url = make_url(text)
        except ArgumentError:
            raise ConnectionConfigError(
                f"connection string {redact(text)!r} is not a valid URL (form: backend://user@host/database)"
            ) from None
        dialect = registry.for_backend(url.drivername)
        if inline and url.password and not allow_credentials:
            raise ConnectionConfigError(
                "the connection string carries a password, which would be stored in the workflow; "
                "use a named connection instead: set SQLADAPTER_CONNECTION_<NAME> to the URL on the "
                "worker and pass connection: \"<name>\" (or allow inline passwords with "
                "SQLADAPTER_ALLOW_INLINE_CREDENTIALS=1)"
            )
        if dialect.extensions:
            if inline and url.query:
                raise ConnectionConfigError(
                    f"options after '?' are not accepted in an inline {dialect.name} URL: "
                    "they could change how the file is opened; use a named connection"
                )
            database = url.database or ""
            if database not in _MEMORY:
                database = str(_place(database, data_dir, confine=inline))
            url = URL.create(dialect.driver, database=database, query=url.query)
        else:
            url = url.set(drivername=dialect.driver)
    else:
        dialect = registry.for_extension(text)
        url = dialect.url_for_path(str(_place(text, data_dir, confine=inline)))
    secrets = (url.password,) if url.password else ()
    return Target(dialect, url, _engine(dialect, url, read_only), tuple(str(s) for s in secrets))


def _place(raw: str, data_dir: Path, *, confine: bool) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        path = data_dir / path
    real = Path(os.path.realpath(path))
    if confine:
        root = Path(os.path.realpath(data_dir))
        if real != root and root not in real.parents:
            raise ConnectionConfigError(
                f"database path {raw!r} is outside the data directory {data_dir}; put the file there "
                "(SQLADAPTER_DATA_DIR sets it) or configure a named connection"
            )
    return real


_engines: dict[tuple[str, str, bool], Engine] = {}
_engines_lock = threading.Lock()


def _engine(dialect: Dialect, url: URL, read_only: bool) -> Engine:
    key = (dialect.name, url.render_as_string(hide_password=False), read_only)
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = dialect.create_engine(url, read_only=read_only)
    return engine


def dispose_engines() -> None:
    """Close every pooled connection and forget resolved connections (tests, plugin reloads)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
    _resolve.cache_clear()
