"""Connection strings to (dialect, engine): URLs, bare file paths and named connections.

Inline connection strings come from task input, so whoever starts a workflow controls them:
file paths are confined to the data directory and passwords are refused. Named connections
come from the operator (environment or a TOML file) and are trusted as written.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import plugins
from .errors import ConnectionConfigError, redact
from .settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .dialect import Dialect

log = logging.getLogger("sqladapter")

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
    target = _resolve(
        text, inline, read_only, settings.data_dir, settings.allow_inline_credentials, settings.max_inline_urls
    )
    if read_only and target.dialect.extensions and target.url.database not in _MEMORY:
        if not _exists(target.url.database):
            name = connection or connection_string
            raise ConnectionConfigError(
                f"database file {name!r} does not exist in the data directory {settings.data_dir}; "
                f"create it with: sqladapter seed {name}"
            )
    return target


# When each database file was last seen to exist. A stat per task costs as much as a tenth of
# a small query; a file deleted under a running worker is reported at most this late.
_SEEN_FOR_SECONDS = 1.0
_seen: dict[str, float] = {}


def _exists(path: str) -> bool:
    now = time.monotonic()
    if _seen.get(path, 0.0) > now:
        return True
    if not os.path.exists(path):
        return False
    if len(_seen) > 1024:
        _seen.clear()
    _seen[path] = now + _SEEN_FOR_SECONDS
    return True


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
    check_unambiguous(name, value)
    return value


_HOST = re.compile(r"^[A-Za-z0-9.\-_%]*$")


def check_unambiguous(name: str, text: str) -> None:
    """Refuse a configured URL whose user name or password would be read as part of the host.

    An unencoded `@` in a password moves the split between credentials and host, and the
    driver then names the "host" (a piece of the password) in its errors; spaces and non-ASCII
    letters are read differently by different clients.
    """
    if not _SCHEME.match(text):
        return
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        url = None
    credentials = _credentials(text)
    host = "" if url is None or url.host is None else url.host
    ipv6 = ":" in host and all(c in "0123456789abcdefABCDEF:." for c in host)
    host_ok = url is not None and (ipv6 or _HOST.match(host) is not None)
    if not host_ok or not credentials.isascii() or any(c.isspace() for c in credentials):
        raise ConnectionConfigError(
            f"the URL of connection {name!r} cannot be read unambiguously: its user name or password holds a "
            "character that must be percent-encoded (such as @, :, /, a space or a non-ASCII letter); write it "
            "encoded, e.g. with python -c \"import urllib.parse; print(urllib.parse.quote(input(), safe=''))\""
        )


def check_named_connections(settings: Settings) -> list[str]:
    """Every named connection the worker has, each checked; the names. Run at worker start."""
    prefix = "SQLADAPTER_CONNECTION_"
    # The environment wins over the file, as in named_connection.
    found = {key[len(prefix) :].lower().replace("_", "-"): text for key, text in os.environ.items() if key.startswith(prefix)}
    if settings.connections_file is not None:
        for name, text in _connections_file(str(settings.connections_file)).items():
            found.setdefault(name, text)
    for name, text in found.items():
        check_unambiguous(name, text)
    return list(found)


def _credentials(text: str) -> str:
    """The `user:password` part of a URL as written, before any decoding; "" when it has none."""
    authority = text.split("://", 1)[1].split("?", 1)[0] if _SCHEME.match(text) else ""
    return authority.rsplit("@", 1)[0] if "@" in authority else ""


def _credential_fragments(text: str) -> tuple[str, ...]:
    """The configured credentials as written, and their pieces: none of them may appear in a message."""
    _, _, password = _credentials(text).partition(":")
    pieces = {password, *re.split(r"[@:/]", password)}
    return tuple(sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True))


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
def _resolve(
    text: str, inline: bool, read_only: bool, data_dir: Path, allow_credentials: bool, max_inline_urls: int
) -> Target:
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
        if inline:
            _refuse_inline_options(dialect, url)
        if dialect.extensions:
            database = url.database or ""
            if database not in _MEMORY:
                database = str(_place(database, data_dir, confine=inline))
            url = URL.create(dialect.driver, database=database, query=url.query)
        else:
            url = url.set(drivername=dialect.driver)
    else:
        dialect = registry.for_extension(text)
        url = dialect.url_for_path(str(_place(text, data_dir, confine=inline)))
    secrets = ((str(url.password),) if url.password else ()) + _credential_fragments(text)
    inline_server = inline and not dialect.extensions
    return Target(dialect, url, _engine(dialect, url, read_only, max_inline_urls if inline_server else None), secrets)


def _refuse_inline_options(dialect: Dialect, url: URL) -> None:
    # Options after '?' go to the driver, and many of them configure far more than the
    # connection's address: a command run on connect, a file read for defaults, stacked
    # statements, session settings. Task input may carry only those the dialect lists as
    # harmless; the operator's named connections may carry any.
    unknown = sorted(key for key in url.query if key.lower() not in dialect.inline_url_options)
    if unknown:
        allowed = ", ".join(sorted(dialect.inline_url_options)) or "none"
        raise ConnectionConfigError(
            f"option(s) {', '.join(unknown)} after '?' are not accepted in an inline {dialect.name} connection "
            f"string (accepted there: {allowed}): options configure the connection, so they belong to the "
            "operator; configure a named connection (SQLADAPTER_CONNECTION_<NAME>) and pass connection: \"<name>\""
        )


def _place(raw: str, data_dir: Path, *, confine: bool) -> Path:
    if "\x00" in raw:
        raise ConnectionConfigError("the database path holds a NUL character; give a plain file name")
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
# Engines first made for an inline server URL. Task input chooses those URLs, and every
# variant (`?connect_timeout=1`, `=2`, ...) would otherwise get a pool of its own whose
# connections stay open: enough variants use up the server's connection slots for everyone.
_inline_keys: set[tuple[str, str, bool]] = set()
_uncounted: dict[Any, tuple[str, str, bool]] = {}


def _engine(dialect: Dialect, url: URL, read_only: bool, max_inline: int | None = None) -> Engine:
    key = (dialect.name, url.render_as_string(hide_password=False), read_only)
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                if max_inline is not None and len(_inline_keys) >= max_inline:
                    raise ConnectionConfigError(
                        f"this worker already keeps connections for {max_inline} different inline "
                        "database URLs; configure this database as a named connection "
                        "(SQLADAPTER_CONNECTION_<NAME>) or raise SQLADAPTER_MAX_INLINE_URLS"
                    )
                try:
                    engine = _engines[key] = dialect.create_engine(url, read_only=read_only)
                except (TypeError, ValueError) as exc:
                    # SQLAlchemy reads some options itself (connect_timeout=abc): not retryable.
                    raise ConnectionConfigError(
                        f"{dialect.name}: an option of the connection's URL is not accepted ({exc}); fix the URL"
                    ) from None
                if max_inline is not None:
                    # Counted once a connection worked (see allowed_functions): URLs of servers that
                    # never answer hold no connection, so they must not use up the cap.
                    _uncounted[engine] = key
    return engine


_allowed: dict[Engine, frozenset[str]] = {}


def allowed_functions(target: Target) -> frozenset[str]:
    """The functions a query may call on this target's database, asked of the dialect once per engine."""
    allowed = _allowed.get(target.engine)
    if allowed is None:
        try:
            connection = target.engine.raw_connection()
        except Exception:
            key = _uncounted.pop(target.engine, None)
            if key is not None:  # an inline URL that never worked: forget it, cap untouched
                with _engines_lock:
                    _engines.pop(key, None)
                target.engine.dispose()
                _resolve.cache_clear()
            raise
        try:
            allowed = frozenset(target.dialect.allowed_functions(connection.dbapi_connection))
        finally:
            _close(connection)
        _allowed[target.engine] = allowed
        key = _uncounted.pop(target.engine, None)
        if key is not None:
            with _engines_lock:
                _inline_keys.add(key)
    return allowed


def open_connections() -> dict[str, int]:
    """Connections this process holds open to each dialect's databases (checked out or idle)."""
    counts: dict[str, int] = {}
    with _engines_lock:
        engines = list(_engines.items())
    for (dialect, _url, _mode), engine in engines:
        pool = engine.pool
        checkedout = getattr(pool, "checkedout", None)
        idle = getattr(pool, "checkedin", None)
        held = (checkedout() if callable(checkedout) else 0) + (idle() if callable(idle) else 0)
        counts[dialect] = counts.get(dialect, 0) + held
    return counts


def dispose_engines() -> None:
    """Close every pooled connection and forget resolved connections (tests, plugin reloads)."""
    _release_kept(lambda thread: True, everywhere=True)
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _inline_keys.clear()
        _uncounted.clear()
        _allowed.clear()
    _resolve.cache_clear()
    _seen.clear()


# -- connections kept by their thread ------------------------------------------------------------
#
# A pool checkout and return costs tens of microseconds (more with a pre-ping round trip): as
# much as the rest of a small query's own work. Where the dialect says a connection is left
# with nothing open after a query, each thread keeps the connection it checked out and uses it
# again. A kept connection stays checked out of its pool; the pool's size bounds how many
# threads keep one, the overflow serves the rest.


class _Kept(threading.local):
    generation = -1

    def __init__(self) -> None:
        self.connections: dict[Engine, Any] = {}


_kept = _Kept()
_kept_lock = threading.Lock()
# Every kept connection with the thread keeping it, so that dispose_engines can close them all
# and a connection whose thread has ended goes back to its pool.
_kept_all: list[tuple[threading.Thread, Engine, Any]] = []
_kept_generation = 0


def checkout(target: Target) -> tuple[Any, bool]:
    """A pooled DB-API connection for this thread, and whether the thread keeps it afterwards."""
    engine = target.engine
    kept = _kept
    if kept.generation == _kept_generation:
        connection = kept.connections.get(engine)
        if connection is not None:
            return connection, True
    if _kept_all:
        # Threads that ended still hold what they kept; their connections go back to the pool
        # before this thread may need one of them.
        _release_kept(lambda thread: not thread.is_alive())
    connection = engine.raw_connection()
    if _keepable(target, connection):
        with _kept_lock:
            if kept.generation != _kept_generation:
                kept.connections = {}
                kept.generation = _kept_generation
            kept.connections[engine] = connection
            _kept_all.append((threading.current_thread(), engine, connection))
        return connection, True
    return connection, False


def checkin(target: Target, connection: Any, kept: bool, *, failed: bool = False) -> None:
    """Done with a connection from `checkout`; after a failure a kept one goes back to the pool."""
    if kept:
        if not failed and connection.is_valid:
            return
        _kept.connections.pop(target.engine, None)
        with _kept_lock:
            _kept_all[:] = [entry for entry in _kept_all if entry[2] is not connection]
    _close(connection)


def _keepable(target: Target, connection: Any) -> bool:
    pool = target.engine.pool
    size, checkedout = getattr(pool, "size", None), getattr(pool, "checkedout", None)
    if not callable(size) or not callable(checkedout) or checkedout() > size():
        return False
    return bool(target.dialect.keeps_connection(connection))


def _release_kept(which: Callable[[threading.Thread], bool], *, everywhere: bool = False) -> None:
    """Return the kept connections of the threads `which` picks to their pools.

    With `everywhere`, every thread forgets what it kept (the connections of live threads
    are among those closed).
    """
    global _kept_generation
    with _kept_lock:
        released, staying = [], []
        for entry in _kept_all:
            (released if which(entry[0]) else staying).append(entry)
        _kept_all[:] = staying
        if everywhere:
            _kept_generation += 1
    for _thread, _engine, connection in released:
        _close(connection)


#: connection.info key a dialect sets on a connection it gave up on while a call still runs on it:
#: it is out of the pool already, and the dialect closes it once the call ends.
ABANDONED = "sqladapter.abandoned"


def _close(connection: Any) -> None:
    if connection.info.get(ABANDONED):
        return
    if not connection.is_valid:
        return  # invalidated: already back in its pool, to reconnect on next use
    try:
        connection.close()
    except Exception:  # returning to the pool rolls back; a failure there only loses that connection
        log.debug("could not return a connection to the pool", exc_info=True)
