"""SQLite, built in: read-only by URI and by authorizer, time-limited by a progress handler."""

from __future__ import annotations

import json
import math
import sqlite3
import time
import urllib.parse
from types import MappingProxyType
from typing import Any

from sqlalchemy.pool import QueuePool

from .. import errors
from ..dialect import Dialect
from ..error_rules import CONSTRAINT, READ_ONLY, TIME_LIMIT, ErrorRule
from ..hookspecs import hookimpl

# Authorizer actions a read-only query never needs. Everything else (SELECT, READ, FUNCTION
# on the allowlist, RECURSIVE, read-only PRAGMAs) is allowed.
_DENIED_ACTIONS = frozenset(
    getattr(sqlite3, name)
    for name in (
        "SQLITE_INSERT SQLITE_UPDATE SQLITE_DELETE SQLITE_ATTACH SQLITE_DETACH SQLITE_TRANSACTION "
        "SQLITE_SAVEPOINT SQLITE_ANALYZE SQLITE_REINDEX SQLITE_ALTER_TABLE SQLITE_CREATE_INDEX "
        "SQLITE_CREATE_TABLE SQLITE_CREATE_TEMP_INDEX SQLITE_CREATE_TEMP_TABLE "
        "SQLITE_CREATE_TEMP_TRIGGER SQLITE_CREATE_TEMP_VIEW SQLITE_CREATE_TRIGGER SQLITE_CREATE_VIEW "
        "SQLITE_CREATE_VTABLE SQLITE_DROP_INDEX SQLITE_DROP_TABLE SQLITE_DROP_TEMP_INDEX "
        "SQLITE_DROP_TEMP_TABLE SQLITE_DROP_TEMP_TRIGGER SQLITE_DROP_TEMP_VIEW SQLITE_DROP_TRIGGER "
        "SQLITE_DROP_VIEW SQLITE_DROP_VTABLE"
    ).split()
)
# PRAGMAs whose argument names what to read (pragma_table_info('people')), not a value to set.
_PRAGMAS_READING_AN_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "index_info", "index_xinfo", "index_list", "foreign_key_list", "table_list"}
)


def _builtin_functions() -> frozenset[str]:
    """SQLite's own functions that a query may call, from its catalog (PRAGMA function_list).

    Built-in functions flagged deterministic, aggregates and window functions (they only read),
    and the reviewed `_REVIEWED_FUNCTIONS`; never those in `_EXCLUDED_FUNCTIONS`. Functions an
    application or extension registered are not built-in, so they are refused.
    """
    connection = sqlite3.connect(":memory:")
    try:
        rows = connection.execute("SELECT name, builtin, type, flags FROM pragma_function_list").fetchall()
    finally:
        connection.close()
    refused = {name for name, builtin, kind, flags in rows if not builtin or (kind == "s" and not flags & _DETERMINISTIC)}
    names = {name for name, *_ in rows} - refused
    return frozenset((names | _REVIEWED_FUNCTIONS) - _EXCLUDED_FUNCTIONS)


_DETERMINISTIC = 0x800  # SQLITE_DETERMINISTIC in function_list's flags
# Not deterministic, but only read the clock, the random generator or the library's version.
_REVIEWED_FUNCTIONS = frozenset(
    {"random", "randomblob", "current_date", "current_time", "current_timestamp", "sqlite_version", "sqlite_source_id"}
)
# Never callable: they load code, change the tokenizers, or report what an earlier statement on
# the same connection did (state that would cross from one task to the next).
_EXCLUDED_FUNCTIONS = frozenset(
    {
        "load_extension",
        "fts3_tokenizer",
        "changes",
        "total_changes",
        "last_insert_rowid",
        "sqlite_log",
        "readfile",
        "writefile",
        "edit",
    }
)
# Table-valued functions a query may read from (SQLite implements them as virtual tables, so the
# authorizer sees reads, not function calls).
_TABLE_FUNCTIONS = frozenset(
    {
        "json_each",
        "json_tree",
        "pragma_table_info",
        "pragma_table_xinfo",
        "pragma_index_list",
        "pragma_index_info",
        "pragma_index_xinfo",
        "pragma_foreign_key_list",
        "pragma_table_list",
    }
)
_FUNCTIONS = _builtin_functions()
# The largest string or blob a query may make or read, and the longest LIKE/GLOB pattern. A
# value past the output budget (1 MB by default) could not be returned anyway.
_MAX_VALUE_BYTES = 2_000_000
_MAX_PATTERN_BYTES = 500


def _instr(haystack: Any, needle: Any) -> int | None:
    """SQLite's instr(X, Y), in linear time: the built-in one compares at every position, which
    over two megabyte-long values runs for seconds inside a single call."""
    if haystack is None or needle is None:
        return None
    if isinstance(haystack, bytes) or isinstance(needle, bytes):
        # Blobs compare as bytes, a text operand as its UTF-8 (SQLite's own rule).
        as_bytes = [v if isinstance(v, bytes) else str(v).encode() for v in (haystack, needle)]
        return as_bytes[0].find(as_bytes[1]) + 1
    return str(haystack).find(str(needle)) + 1


# How many SQLite virtual machine steps run between two checks of the deadline.
_PROGRESS_STEPS = 1000
# How long a read waits on a writer's lock before failing with a retryable lock error.
_BUSY_TIMEOUT_S = 2.0


def _authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action == sqlite3.SQLITE_UPDATE and arg1 in ("sqlite_master", "sqlite_schema"):
        # SQLite asks this while it reads the schema for table-valued PRAGMA functions; real
        # schema changes are denied as CREATE_*/ALTER/DROP, and the file is open mode=ro.
        return sqlite3.SQLITE_OK
    if action in _DENIED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None and (arg1 or "").lower() not in _PRAGMAS_READING_AN_ARGUMENT:
        return sqlite3.SQLITE_DENY  # PRAGMA name = value: a setting changed
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in _FUNCTIONS:
        return sqlite3.SQLITE_DENY  # the same allowlist as the guard's, enforced by SQLite itself
    return sqlite3.SQLITE_OK


def _json_or_text(raw: bytes) -> Any:
    # Columns declared JSON come back parsed; text that is not JSON stays text, never an error.
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


# Declared types pick converters (PARSE_DECLTYPES) process-wide. JSON columns come back parsed.
# Python's own DATE/TIMESTAMP converters raise on text they do not expect (an ISO "T" or a
# zone), which would fail a whole query, so those columns stay the text SQLite stored.
sqlite3.register_converter("JSON", _json_or_text)
sqlite3.register_converter("JSONB", _json_or_text)
sqlite3.register_converter("DATE", _text)
sqlite3.register_converter("TIMESTAMP", _text)


class _Deadline:
    """A connection's time limit: its progress handler, and the context manager arming it."""

    __slots__ = ("at", "seconds")

    def __init__(self) -> None:
        self.at = math.inf
        self.seconds = 0.0

    def expired(self) -> bool:
        # Returning true from the progress handler interrupts the statement.
        return time.monotonic() > self.at

    def __enter__(self) -> None:
        self.at = time.monotonic() + self.seconds

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        late = exc_type is None and time.monotonic() > self.at
        self.at = math.inf
        if late:
            # Work inside one function call (a LIKE over megabytes) never reaches the progress
            # handler: the answer came after the limit, so the task reports the limit, as it
            # would have had the statement been stopped.
            raise errors.QueryTimeoutError(
                f"sqlite: the query ran past its {self.seconds * 1000:.0f} ms time limit inside one call "
                "that SQLite does not interrupt; make the query cheaper or raise timeout_ms"
            )


_DEADLINE = "sqladapter.sqlite.deadline"

_STORAGE_CLASSES = MappingProxyType({int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB", type(None): "NULL"})


class SQLite(Dialect):
    name = "sqlite"
    backends = ("sqlite", "sqlite+pysqlite")
    drivername = "sqlite+pysqlite"
    extensions = (".db", ".sqlite", ".sqlite3")
    grammar = "sqlite"
    paramstyles = ("named", "qmark")
    functions = _FUNCTIONS | _TABLE_FUNCTIONS
    typed_columns = False  # SQLite columns hold any type, row by row
    driver_errors = (sqlite3.Error,)
    # Codes are sqlite3's error names, extended ones among them (SQLITE_BUSY_SNAPSHOT,
    # SQLITE_LOCKED_SHAREDCACHE): those are known by their message instead.
    error_rules = (
        ErrorRule(errors.QueryTimeoutError, TIME_LIMIT, codes=("SQLITE_INTERRUPT",)),
        ErrorRule(errors.PermissionDeniedError, READ_ONLY, phrases=("not authorized", "readonly", "read-only")),
        ErrorRule(errors.LockTimeoutError, codes=("SQLITE_BUSY", "SQLITE_LOCKED")),
        ErrorRule(errors.LockTimeoutError, phrases=("locked",)),
        ErrorRule(errors.DatabaseUnavailableError, codes=("SQLITE_CANTOPEN", "SQLITE_IOERR")),
        ErrorRule(errors.DatabaseUnavailableError, phrases=("unable to open",)),
        ErrorRule(errors.QueryError, "the file is not a usable SQLite database", codes=("SQLITE_NOTADB", "SQLITE_CORRUPT")),
        ErrorRule(errors.NotReadOnlyError, "send exactly one statement", phrases=("one statement at a time",)),
        ErrorRule(errors.ConstraintViolationError, CONSTRAINT, types=(sqlite3.IntegrityError,)),
        ErrorRule(errors.QueryError),
    )

    def engine_options(self, url, *, read_only):
        path = url.database or ":memory:"

        def connect() -> sqlite3.Connection:
            if read_only:
                # mode=ro: SQLite itself refuses writes to the file; check_same_thread off
                # because the pool hands connections to whichever worker thread asks.
                uri = f"file:{urllib.parse.quote(path)}?mode=ro"
                conn = sqlite3.connect(
                    uri,
                    uri=True,
                    check_same_thread=False,
                    detect_types=sqlite3.PARSE_DECLTYPES,
                    timeout=_BUSY_TIMEOUT_S,
                )
                conn.set_authorizer(_authorizer)
                conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
                # Work inside one function call never reaches the progress handler, so the size of
                # what one call may work on is bounded instead: a value, and a LIKE/GLOB pattern
                # (matching is quadratic in the pattern's length).
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
                conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, _MAX_PATTERN_BYTES)
                conn.create_function("instr", 2, _instr, deterministic=True)
            else:
                conn = sqlite3.connect(path, check_same_thread=False, timeout=_BUSY_TIMEOUT_S)
                # Writes keep the foreign keys the schema declares, which SQLite checks only when asked.
                conn.execute("PRAGMA foreign_keys = ON")
            return conn

        # A local file needs no pre-ping; keep enough connections for a worker's threads.
        return {"creator": connect, "poolclass": QueuePool, "pool_size": 8, "max_overflow": 8}

    def thread_may_keep(self, connection):
        # A SELECT opens no transaction in sqlite3, and fetch closes its cursor, which ends
        # the statement and its read lock: nothing is left for the pool's rollback to undo.
        return True

    def time_limit(self, connection, limits) -> _Deadline:  # type: ignore[override]
        # One progress handler per connection, installed on its first query and armed for each
        # query: cheaper than installing and removing a handler every time.
        dbapi_connection = connection.dbapi_connection
        installed = connection.info.get(_DEADLINE)
        if installed is None or installed[0] is not dbapi_connection:
            deadline = _Deadline()
            dbapi_connection.set_progress_handler(deadline.expired, _PROGRESS_STEPS)
            connection.info[_DEADLINE] = (dbapi_connection, deadline)
        else:
            deadline = installed[1]
        deadline.seconds = limits.timeout_ms / 1000
        return deadline

    def begin_write(self, connection, limits):
        # The write lock at the start, not at the first write: the ledger lookup and the
        # statements then see one state of the file, and a second writer waits here (up to the
        # busy timeout, then a retryable lock error) instead of failing halfway through.
        connection.dbapi_connection.execute("BEGIN IMMEDIATE")

    def column_type(self, column, sample):
        return _STORAGE_CLASSES.get(type(sample)) or super().column_type(column, sample)

    def error_code(self, exc):
        return getattr(exc, "sqlite_errorname", None)


@hookimpl
def sqladapter_register_dialects(register):
    register(SQLite())
