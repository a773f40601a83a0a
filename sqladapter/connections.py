"""Connection strings to pooled engines: URLs, bare file paths and named connections.

Inline connection strings come from task input, so whoever starts a workflow controls them:
file paths are confined to the data directory, passwords and driver options are refused, and
the pools they open are capped in number and closed when idle. Named connections come from
the operator (environment or a TOML file) and are trusted as written.

`Pools` holds a `Runtime`'s engines and the connections its threads keep; nothing here is
shared between runtimes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .deadlines import GRACE_SECONDS
from .dialect import ABANDONED
from .errors import ConnectionConfigError, NotWritableError, redact
from .settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .dialect import Dialect
    from .plugins import Registry

log = logging.getLogger("sqladapter")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_MEMORY = ("", ":memory:")
_WRITABLE_SUFFIX = "_WRITABLE"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _variable(name: str) -> str:
    """The environment variable of a connection name, after checking the name's form."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConnectionConfigError(
            "connection must be a name of letters, digits, '_' or '-' (starting with a letter), "
            "configured on the worker as SQLADAPTER_CONNECTION_<NAME>"
        )
    return "SQLADAPTER_CONNECTION_" + name.upper().replace("-", "_")


@dataclass(frozen=True)
class Source:
    """A resolved connection string: the dialect, its pooled engine, and what must never be shown."""

    dialect: Dialect
    url: URL
    engine: Engine
    #: Strings to redact from any message about this connection (the password).
    secrets: tuple[str, ...]

    @property
    def label(self) -> str:
        """The URL with its password hidden, safe for logs and errors."""
        return self.url.render_as_string(hide_password=True)


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


def _credentials(text: str) -> str:
    """The `user:password` part of a URL as written, before any decoding; "" when it has none."""
    authority = text.split("://", 1)[1].split("?", 1)[0] if _SCHEME.match(text) else ""
    return authority.rsplit("@", 1)[0] if "@" in authority else ""


def _credential_fragments(text: str) -> tuple[str, ...]:
    """The configured credentials as written, and their pieces: none of them may appear in a message."""
    _, _, password = _credentials(text).partition(":")
    pieces = {password, *re.split(r"[@:/]", password)}
    return tuple(sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True))


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
            'operator; configure a named connection (SQLADAPTER_CONNECTION_<NAME>) and pass connection: "<name>"'
        )


def _confined_path(raw: str, data_dir: Path, *, confine: bool) -> Path:
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


class Pools:
    """The engines one `Runtime` opened, the functions each database allows, and the
    connections its threads keep between queries."""

    def __init__(self, settings: Settings, registry: Registry, environ: Mapping[str, str] = os.environ) -> None:
        self.settings, self.registry, self.environ = settings, registry, environ
        self._lock = threading.Lock()
        self._engines: dict[_Key, Engine] = {}
        self._resolved: dict[tuple[str, bool, bool], Source] = {}
        self._allowed: dict[Engine, frozenset[str]] = {}
        # Inline server URLs: task input chooses them, and every variant (`?connect_timeout=1`,
        # `=2`, ...) would otherwise get a pool of its own whose connections stay open. Counted
        # toward the cap once a connection worked; until then only noted as uncounted.
        self._inline: dict[Engine, float] = {}  # counted -> when last used (time.monotonic)
        self._uncounted: set[Engine] = set()
        self._keys: dict[Engine, _Key] = {}
        self._next_sweep = 0.0
        self._files: dict[str, tuple[int, dict[str, str], frozenset[str]]] = {}
        self._kept = _Kept()
        self._file_locks: dict[str, threading.Lock] = {}
        self._kept_all: list[tuple[threading.Thread, Engine, Any]] = []

    # -- resolving ---------------------------------------------------------------------------

    def resolve(self, connection_string: str | None = None, connection: str | None = None, *, read_only: bool = True) -> Source:
        """Resolve exactly one of an inline connection string or a connection name."""
        if (connection_string is None) == (connection is None):
            raise ConnectionConfigError(
                "give exactly one of connection_string (a URL or a database file path) "
                "or connection (the name of a connection configured on the worker)"
            )
        text: Any
        if connection is not None:
            text, inline = self.named_connection(connection), False
        else:
            text, inline = connection_string, True
        key = (text, inline, read_only)
        source = self._resolved.get(key)
        if source is None:
            source = self._resolve(text, inline, read_only)
            if len(self._resolved) >= 256:
                self._resolved.clear()
            self._resolved[key] = source
        if inline and source.engine in self._inline:
            self._inline[source.engine] = time.monotonic()
        if read_only and source.dialect.extensions and source.url.database not in _MEMORY:
            # A stat per task: a file deleted under a running worker is reported at once.
            if not os.path.exists(source.url.database or ""):
                name = connection or connection_string
                raise ConnectionConfigError(
                    f"database file {name!r} does not exist in the data directory {self.settings.data_dir}; "
                    f"create it with: sqladapter seed {name}"
                )
        return source

    def named_connection(self, name: str) -> str:
        """The connection string the operator configured under `name`."""
        variable = _variable(name)
        value = self.environ.get(variable)
        connections_file = self.settings.connections_file
        if value is None and connections_file is not None:
            value = self._connections_file(str(connections_file))[0].get(name)
        if not value:
            where = f"set {variable} on the worker"
            if connections_file is not None:
                where += f" or add {name!r} under [connections] in {connections_file}"
            raise ConnectionConfigError(f"no connection named {name!r}: {where}")
        check_unambiguous(name, value)
        return value

    def writable(self, name: str) -> bool:
        """Whether the operator marked the named connection writable (`execute_sql` may use it).

        SQLADAPTER_CONNECTION_<NAME>_WRITABLE=1 in the environment, or `writable = true` in the
        connection's table in the connections file; the environment's word wins when it is set.
        """
        flag = self.environ.get(_variable(name) + _WRITABLE_SUFFIX)
        if flag is not None and flag.strip():
            value = flag.strip().lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise ConnectionConfigError(
                f"{_variable(name) + _WRITABLE_SUFFIX}={flag!r} is not a flag: set it to 1 (writable) or 0"
            )
        if self.environ.get(_variable(name)) is not None:
            return False  # configured in the environment, where only the flag marks it writable
        if self.settings.connections_file is not None:
            return name in self._connections_file(str(self.settings.connections_file))[1]
        return False

    def writable_source(self, connection: Any, connection_string: Any = None) -> Source:
        """The read-write engine of a named connection the operator marked writable; else NotWritableError.

        Never an inline connection string or a file path: whoever starts a workflow chooses
        those, and only the operator decides where writes go.
        """
        if connection_string is not None or connection is None:
            raise NotWritableError(
                "execute_sql writes only through a named connection the operator marked writable, never an inline "
                "connection_string or file path: configure SQLADAPTER_CONNECTION_<NAME> with "
                "SQLADAPTER_CONNECTION_<NAME>_WRITABLE=1 (or writable = true in the connections file) and pass "
                'connection: "<name>"'
            )
        self.named_connection(connection)  # a missing name says how to configure one
        if not self.writable(connection):
            where = f"set {_variable(connection) + _WRITABLE_SUFFIX}=1 on the worker"
            if self.settings.connections_file is not None:
                where += (
                    f", or write it as [connections.{connection}] with url and writable = true in "
                    f"{self.settings.connections_file}"
                )
            raise NotWritableError(
                f"connection {connection!r} is not marked writable, so execute_sql may not write to it: {where}"
            )
        return self.resolve(None, connection, read_only=False)

    def check_named_connections(self) -> list[str]:
        """Every named connection the worker has, each checked; the names. Run at worker start."""
        prefix = "SQLADAPTER_CONNECTION_"
        # The environment wins over the file, as in named_connection. A *_WRITABLE variable is
        # the flag of the connection named by the rest of it, not a connection of its own.
        found = {
            key[len(prefix) :].lower().replace("_", "-"): text
            for key, text in self.environ.items()
            if key.startswith(prefix) and not (key.endswith(_WRITABLE_SUFFIX) and key[: -len(_WRITABLE_SUFFIX)] in self.environ)
        }
        if self.settings.connections_file is not None:
            for name, text in self._connections_file(str(self.settings.connections_file))[0].items():
                found.setdefault(name, text)
        for name, text in found.items():
            check_unambiguous(name, text)
        return list(found)

    def _connections_file(self, path: str) -> tuple[dict[str, str], frozenset[str]]:
        # Read again when the file changes: an operator adds a connection without a restart.
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError as exc:
            raise ConnectionConfigError(f"cannot read SQLADAPTER_CONNECTIONS_FILE {path}: {exc.strerror}") from None
        cached = self._files.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1], cached[2]
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f).get("connections", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConnectionConfigError(f"cannot read SQLADAPTER_CONNECTIONS_FILE {path}: {exc}") from None
        # Each entry is a URL (`name = "url"`), or a table (`[connections.name]` with `url` and
        # an optional `writable = true`).
        connections: dict[str, str] = {}
        writable = set()
        for key, value in table.items():
            if isinstance(value, dict):
                url, flag = value.get("url"), value.get("writable", False)
                if not isinstance(url, str) or not isinstance(flag, bool) or set(value) - {"url", "writable"}:
                    raise ConnectionConfigError(
                        f"connection {key!r} in SQLADAPTER_CONNECTIONS_FILE {path} must be a URL string, or a table "
                        'with url = "..." and optionally writable = true (nothing else)'
                    )
                connections[str(key)] = url
                if flag:
                    writable.add(str(key))
            else:
                connections[str(key)] = str(value)
        self._files[path] = (mtime, connections, frozenset(writable))
        return connections, frozenset(writable)

    def _resolve(self, text: str, inline: bool, read_only: bool) -> Source:
        if not isinstance(text, str) or not text.strip():
            raise ConnectionConfigError("connection_string is empty: give a URL or a database file path")
        settings = self.settings
        if _SCHEME.match(text):
            try:
                url = make_url(text)
            except ArgumentError:
                raise ConnectionConfigError(
                    f"connection string {redact(text)!r} is not a valid URL (form: backend://user@host/database)"
                ) from None
            dialect = self.registry.for_backend(url.drivername)
            if inline and url.password and not settings.allow_inline_credentials:
                raise ConnectionConfigError(
                    "the connection string carries a password, which would be stored in the workflow; "
                    "use a named connection instead: set SQLADAPTER_CONNECTION_<NAME> to the URL on the "
                    'worker and pass connection: "<name>" (or allow inline passwords with '
                    "SQLADAPTER_ALLOW_INLINE_CREDENTIALS=1)"
                )
            if inline:
                _refuse_inline_options(dialect, url)
            if dialect.extensions:
                database = url.database or ""
                if database not in _MEMORY:
                    database = str(_confined_path(database, settings.data_dir, confine=inline))
                url = URL.create(dialect.drivername, database=database, query=url.query)
            else:
                url = url.set(drivername=dialect.drivername)
        else:
            dialect = self.registry.for_extension(text)
            url = dialect.url_for_path(str(_confined_path(text, settings.data_dir, confine=inline)))
        secrets = ((str(url.password),) if url.password else ()) + _credential_fragments(text)
        inline_server = inline and not dialect.extensions
        return Source(dialect, url, self._engine(dialect, url, read_only, inline_server), secrets)

    def _engine(self, dialect: Dialect, url: URL, read_only: bool, inline_server: bool) -> Engine:
        key = (dialect.name, url.render_as_string(hide_password=False), read_only)
        engine = self._engines.get(key)
        if engine is not None:
            return engine
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                return engine
            cap = self.settings.max_inline_urls
            if inline_server and len(self._inline) >= cap:
                self._close_idle(time.monotonic())
                if len(self._inline) >= cap:
                    raise ConnectionConfigError(
                        f"this worker already keeps connections for {cap} different inline "
                        "database URLs; configure this database as a named connection "
                        "(SQLADAPTER_CONNECTION_<NAME>) or raise SQLADAPTER_MAX_INLINE_URLS"
                    )
            try:
                engine = self._engines[key] = dialect.create_engine(url, read_only=read_only)
            except (TypeError, ValueError) as exc:
                # SQLAlchemy reads some options itself (connect_timeout=abc): not retryable.
                raise ConnectionConfigError(
                    f"{dialect.name}: an option of the connection's URL is not accepted ({exc}); fix the URL"
                ) from None
            self._keys[engine] = key
            if inline_server:
                self._uncounted.add(engine)
        return engine

    def sweep(self) -> None:
        """Close the pools of inline URLs unused for SQLADAPTER_INLINE_URL_IDLE_SECONDS.

        Cheap to call per task: it looks only once every few seconds.
        """
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(60.0, self.settings.inline_url_idle_seconds / 4)
        with self._lock:
            self._close_idle(now)

    def _close_idle(self, now: float) -> None:
        # Under self._lock. A pool with a connection checked out (other than those threads keep
        # between tasks) is in use, whatever its age; and no query outlives the cap on timeout_ms
        # plus the watchdog's grace, so a pool unused for longer has no query running on it.
        longest_query = self.settings.max_timeout_ms / 1000 + 2 * GRACE_SECONDS + 1
        idle_after = max(self.settings.inline_url_idle_seconds, longest_query)
        for engine, used in list(self._inline.items()):
            if now - used >= idle_after and _checked_out(engine) <= self._kept_by(engine):
                self._forget(engine)

    def _kept_by(self, engine: Engine) -> int:
        return sum(1 for _, kept_engine, _ in self._kept_all if kept_engine is engine)

    def _forget(self, engine: Engine) -> None:
        # Under self._lock: the engine is no longer handed out, and its connections close.
        self._engines.pop(self._keys.pop(engine), None)
        self._allowed.pop(engine, None)
        self._inline.pop(engine, None)
        self._uncounted.discard(engine)
        self._resolved = {k: v for k, v in self._resolved.items() if v.engine is not engine}
        self._release_kept(lambda thread, kept_engine: kept_engine is engine)
        engine.dispose()

    # -- the functions a database allows -----------------------------------------------------

    def allowed_functions(self, source: Source) -> frozenset[str]:
        """The functions a query may call on this source's database, asked of the dialect once per engine."""
        allowed = self._allowed.get(source.engine)
        if allowed is not None:
            return allowed
        try:
            connection = source.engine.raw_connection()
        except Exception:
            with self._lock:
                if source.engine in self._uncounted:  # an inline URL that never worked: forget it, cap untouched
                    self._forget(source.engine)
            raise
        try:
            allowed = frozenset(source.dialect.allowed_functions(connection.dbapi_connection))
        finally:
            _close(connection)
        with self._lock:
            self._allowed[source.engine] = allowed
            if source.engine in self._uncounted:
                self._uncounted.discard(source.engine)
                self._inline[source.engine] = time.monotonic()
        return allowed

    # -- connections kept by their thread ----------------------------------------------------
    #
    # A pool checkout and return costs tens of microseconds (more with a pre-ping round trip):
    # as much as the rest of a small query's own work. Where the dialect says a connection is
    # left with nothing open after a query, each thread keeps the connection it checked out and
    # uses it again. A kept connection stays checked out of its pool; the pool's size bounds how
    # many threads keep one, the overflow serves the rest.

    def checkout(self, source: Source) -> tuple[Any, bool]:
        """A pooled DB-API connection for this thread, and whether the thread keeps it afterwards."""
        engine = source.engine
        kept = self._kept.connections
        connection = kept.get(engine)
        if connection is not None:
            return connection, True
        if self._kept_all:
            # Threads that ended still hold what they kept; their connections go back to the
            # pool before this thread may need one of them.
            self._release_kept(lambda thread, _engine: not thread.is_alive())
        connection = engine.raw_connection()
        if _keepable(source, connection):
            with self._lock:
                kept[engine] = connection
                self._kept_all.append((threading.current_thread(), engine, connection))
            return connection, True
        return connection, False

    def checkin(self, source: Source, connection: Any, kept: bool, *, failed: bool = False) -> None:
        """Done with a connection from `checkout`; after a failure a kept one goes back to the pool."""
        if kept:
            if not failed and connection.is_valid:
                return
            self._kept.connections.pop(source.engine, None)
            with self._lock:
                self._kept_all[:] = [entry for entry in self._kept_all if entry[2] is not connection]
        _close(connection)

    def _release_kept(self, which: Any) -> None:
        """Return the kept connections that `which(thread, engine)` picks to their pools."""
        released: list[tuple[threading.Thread, Engine, Any]] = []
        staying: list[tuple[threading.Thread, Engine, Any]] = []
        for entry in list(self._kept_all):
            (released if which(entry[0], entry[1]) else staying).append(entry)
        self._kept_all[:] = staying
        for _thread, _engine, connection in released:
            _close(connection)

    # -- the whole -------------------------------------------------------------------------------

    def open_connections(self) -> dict[str, int]:
        """Connections held open to each dialect's databases (checked out or idle)."""
        counts: dict[str, int] = {}
        for (dialect, _url, _mode), engine in list(self._engines.items()):
            pool = engine.pool
            checkedin = getattr(pool, "checkedin", None)
            held = _checked_out(engine) + (checkedin() if callable(checkedin) else 0)
            counts[dialect] = counts.get(dialect, 0) + held
        return counts

    def close_engine(self, source: Source, *, read_only: bool) -> None:
        """Close the engine this source's database has in one mode, if it has one open.

        For a dialect whose database file cannot be open read-only and read-write in one
        process at once (`Dialect.one_mode_per_file`): a write closes the read-only engine of
        its file before it runs, and its own after.
        """
        key = (source.dialect.name, source.url.render_as_string(hide_password=False), read_only)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._forget(engine)

    def file_lock(self, source: Source) -> threading.Lock:
        """The lock a write holds on a database file whose dialect has `one_mode_per_file`,
        while it closes the file's read-only engine, writes, and closes its own."""
        key = source.url.render_as_string(hide_password=False)
        with self._lock:
            return self._file_locks.setdefault(key, threading.Lock())

    def close_file_engines(self) -> None:
        """Close the engines of embedded database files (seeding writes to a file these hold open)."""
        with self._lock:
            for (dialect, _url, _mode), engine in list(self._engines.items()):
                if self.registry.by_name[dialect].extensions:
                    self._forget(engine)

    def close(self) -> None:
        """Close every pooled connection and forget every resolved connection string."""
        with self._lock:
            self._release_kept(lambda thread, engine: True)
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            self._resolved.clear()
            self._allowed.clear()
            self._inline.clear()
            self._uncounted.clear()
            self._keys.clear()


_Key = tuple[str, str, bool]  # (dialect name, URL with password, read-only)


class _Kept(threading.local):
    def __init__(self) -> None:
        self.connections: dict[Engine, Any] = {}


def _checked_out(engine: Engine) -> int:
    checkedout = getattr(engine.pool, "checkedout", None)
    return checkedout() if callable(checkedout) else 0


def _keepable(source: Source, connection: Any) -> bool:
    pool = source.engine.pool
    size, checkedout = getattr(pool, "size", None), getattr(pool, "checkedout", None)
    if not callable(size) or not callable(checkedout) or checkedout() > size():
        return False
    return bool(source.dialect.thread_may_keep(connection))


def _close(connection: Any) -> None:
    if connection.info.get(ABANDONED):
        return  # the dialect closes it once the call still running on it ends
    if not connection.is_valid:
        return  # invalidated: already back in its pool, to reconnect on next use
    try:
        connection.close()
    except Exception:  # returning to the pool rolls back; a failure there only loses that connection
        log.debug("could not return a connection to the pool", exc_info=True)
