"""PostgreSQL for sqladapter, through psycopg 3: `postgresql://`, `postgresql+psycopg://`, `postgres://`.

Connections of a read-only engine start with `default_transaction_read_only=on` and run each
statement as its own (therefore read-only) transaction. The server reports that setting back to
the client whenever it changes (PostgreSQL 14 and later), so before every query the dialect
checks, without a round trip, that no earlier statement switched it off, and switches it back
on if one did. Servers that do not report it get `BEGIN READ ONLY` around every query instead.
`statement_timeout` is the time limit, set only when it changes. Rows are streamed in small
chunks; a query without a LIMIT gets `LIMIT max_rows + 1` from the core (`row_limit_in_sql`),
and one with a larger LIMIT of its own is cancelled once enough rows have arrived, so a huge
result never crosses the wire.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Any, Iterator

import psycopg
from psycopg.postgres import types as pg_types
from psycopg.types.datetime import DateLoader, IntervalLoader, TimestampLoader, TimestamptzLoader

from sqladapter import (
    ConnectionConfigError,
    DatabaseUnavailableError,
    Dialect,
    LockTimeoutError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    hookimpl,
    jsontypes,
)

log = logging.getLogger("sqladapter.postgresql")

# Functions that read server files, write, signal other sessions, change settings, run SQL
# given as a string, or notify listeners. pg_sleep stays allowed: the time limit stops it.
# (lo_* and pg_advisory_* are refused by the core as families.)
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "pg_stat_file",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "dblink_connect_u",
        "dblink_send_query",
        "set_config",
        "nextval",
        "setval",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_promote",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_notify",
        "pg_logical_emit_message",
        "pg_create_logical_replication_slot",
        "pg_create_physical_replication_slot",
        "pg_drop_replication_slot",
        "pg_stat_reset",
        "pg_stat_reset_shared",
        "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters",
        "pg_log_backend_memory_contexts",
        "pg_import_system_collations",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
    }
)

_READ_ONLY_OPTION = "-c default_transaction_read_only=on"
_READ_ONLY_SETTING = "default_transaction_read_only"

# connection.info key: the statement_timeout set on the session.
_TIMEOUT_MS = "sqladapter.postgresql.timeout_ms"

# json, jsonb and their arrays: one column may hold objects, arrays, strings and numbers.
_JSON_OIDS = frozenset({114, 199, 3802, 3807})
# date, timestamp, timestamptz, interval: values out of Python's range come back as text.
_TEMPORAL_OIDS = frozenset({1082, 1114, 1184, 1186})

# Rows fetched per network chunk; chunked streaming needs libpq 17, older ones stream row by row.
# libpq holds a whole chunk in memory, so chunks stay small enough that wide rows (a megabyte
# each) cost tens of megabytes at worst, never the whole result.
_CHUNKED = psycopg.pq.version() >= 170000
_MAX_CHUNK = 64

# SQLSTATEs (and classes) by what they mean for a retry.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "53000"})
_LOCK_STATES = frozenset({"55P03"})
_READ_ONLY_STATES = frozenset({"25006"})
_ACCESS_STATES = frozenset({"42501"})
_UNKNOWN_DATABASE = "3D000"
# Connection failures carry no SQLSTATE in psycopg; these are the server's words for a refusal.
_AUTH_PHRASES = ("password authentication failed", "no pg_hba.conf entry", "does not exist", "authentication failed")


def _as_text(loader: type) -> type:
    """`loader`, except that a value Python cannot hold comes back as PostgreSQL's own text."""

    def load(self: Any, data: Any) -> Any:
        try:
            return loader.load(self, data)
        except psycopg.DataError:
            return bytes(data).decode()

    return type(f"Text{loader.__name__}", (loader,), {"load": load})


# 'infinity', '-infinity', BC dates and years past 9999 are valid in PostgreSQL but not in
# Python, and psycopg refuses the whole result for one of them. These loaders are used only
# to run such a query again: the usual loaders stay in C for every other query.
_TEXT_WHEN_OUT_OF_RANGE = {
    "date": _as_text(DateLoader),
    "timestamp": _as_text(TimestampLoader),
    "timestamptz": _as_text(TimestamptzLoader),
    "interval": _as_text(IntervalLoader),
}


def _out_of_python_range(exc: Exception) -> bool:
    # Raised by psycopg while loading a row, so without a SQLSTATE from the server.
    text = str(exc)
    return isinstance(exc, psycopg.DataError) and exc.sqlstate is None and (" too large " in text or " too small " in text)


class PostgreSQL(Dialect):
    name = "postgresql"
    backends = ("postgresql", "postgresql+psycopg", "postgres")
    driver = "postgresql+psycopg"
    grammar = "postgres"
    paramstyles = ("pyformat",)
    forbidden_functions = FORBIDDEN_FUNCTIONS
    package = "sqladapter-postgresql"
    # A streamed query stopped early must be cancelled, and the rows already on their way
    # drained: tens of milliseconds on a big table. Told the limit, the server stops by itself.
    row_limit_in_sql = True

    def engine_options(self, url, *, read_only):
        options = super().engine_options(url, read_only=read_only)
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if read_only:
            existing = url.query.get("options")
            if isinstance(existing, tuple):
                existing = " ".join(existing)
            connect_args["options"] = f"{existing} {_READ_ONLY_OPTION}" if existing else _READ_ONLY_OPTION
            options["isolation_level"] = "AUTOCOMMIT"
        options["connect_args"] = connect_args
        return options

    def on_connect(self, dbapi_connection, *, read_only):
        if read_only and dbapi_connection.info.parameter_status(_READ_ONLY_SETTING) is None:
            # A server that does not report the setting (before PostgreSQL 14): psycopg wraps
            # every query in BEGIN READ ONLY, which no statement inside can undo.
            dbapi_connection.autocommit = False
            dbapi_connection.read_only = True

    def keeps_connection(self, connection):
        # In autocommit no transaction outlives a query; fetch closes its cursor and stream.
        return bool(connection.dbapi_connection.autocommit)

    @contextlib.contextmanager
    def time_limit(self, connection, timeout_ms: int) -> Iterator[None]:
        dbapi_connection = connection.dbapi_connection
        info = connection.info
        if not dbapi_connection.autocommit:
            dbapi_connection.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        elif info.get(_TIMEOUT_MS) != timeout_ms:
            dbapi_connection.execute(f"SET statement_timeout = {int(timeout_ms)}")
            info[_TIMEOUT_MS] = timeout_ms
        yield

    def fetch(self, connection, sql, params, limit):
        dbapi_connection = connection.dbapi_connection
        if dbapi_connection.autocommit:
            self._ensure_read_only(dbapi_connection)
        try:
            return self._stream(dbapi_connection.cursor(), sql, params, limit)
        except psycopg.DataError as exc:
            if not _out_of_python_range(exc):
                raise
        # Read-only, so running it again is safe; only such results pay for the Python loaders.
        cursor = dbapi_connection.cursor()
        for name, loader in _TEXT_WHEN_OUT_OF_RANGE.items():
            cursor.adapters.register_loader(name, loader)
        return self._stream(cursor, sql, params, limit)

    def _stream(self, cursor: Any, sql: str, params: Any, limit: int) -> tuple[Any, list]:
        try:
            stream = cursor.stream(sql, params, size=min(limit, _MAX_CHUNK) if _CHUNKED else 1)
            try:
                rows = self.fetch_rows(lambda n: list(itertools.islice(stream, n)), limit)
                if len(rows) == limit:
                    # With the limit in the SQL the result ends here: reading on to its end
                    # spares the cancel (a new connection to the server) that closing early sends.
                    next(stream, None)
            finally:
                # Closing the stream early cancels the query on the server.
                stream.close()
            description = cursor.description
            if description is None:
                return (), []
            return description, rows
        finally:
            cursor.close()

    def _ensure_read_only(self, dbapi_connection: Any) -> None:
        status = dbapi_connection.info.parameter_status(_READ_ONLY_SETTING)
        if status != "on":
            log.warning("postgresql: %s was %s on a pooled connection; setting it back on", _READ_ONLY_SETTING, status)
            dbapi_connection.execute(f"SET SESSION {_READ_ONLY_SETTING} = on")

    def column_type(self, column, sample):
        oid = column[1]
        info = pg_types.get(oid) if isinstance(oid, int) else None
        if info is None:
            return super().column_type(column, sample)
        return f"{info.name}[]" if info.array_oid == oid and info.oid != oid else info.name

    def converter(self, column, sample):
        type_code = column[1]
        if type_code in _JSON_OIDS:
            return jsontypes.to_json
        if type_code in _TEMPORAL_OIDS:
            return jsontypes.checked_converter(sample)
        return jsontypes.converter_for(sample)

    def classify(self, exc):
        if not isinstance(exc, psycopg.Error):
            return None
        state = exc.sqlstate or ""
        message = str(exc).strip()
        text = f"postgresql: {message}" + (f" ({state})" if state else "")
        lowered = message.lower()
        if state == "57014":
            return QueryTimeoutError("postgresql: the query ran past its time limit and was cancelled", code=state)
        if state in _READ_ONLY_STATES:
            return PermissionDeniedError(f"{text}: queries run read-only", code=state)
        if state.startswith("28") or state in _ACCESS_STATES:
            return PermissionDeniedError(f"{text}; check the user, password and grants of the connection", code=state)
        if state == _UNKNOWN_DATABASE:
            return ConnectionConfigError(f"{text}; check the database name in the connection", code=state)
        if state.startswith("40") or state in _LOCK_STATES:
            return LockTimeoutError(text, code=state)
        if state.startswith("08") or state in _UNAVAILABLE_STATES:
            return DatabaseUnavailableError(text, code=state)
        if not state and isinstance(exc, psycopg.OperationalError):
            if lowered.startswith("connection is bad: invalid"):
                # libpq refused an option of the connection string before connecting: retrying
                # the same string cannot help.
                return ConnectionConfigError(f"{text}; fix the option in the connection string")
            if "database" in lowered and "does not exist" in lowered:
                return ConnectionConfigError(f"{text}; check the database name in the connection")
            if any(phrase in lowered for phrase in _AUTH_PHRASES):
                return PermissionDeniedError(f"{text}; check the user, password and grants of the connection")
            return DatabaseUnavailableError(text)
        if isinstance(exc, psycopg.InterfaceError):
            return DatabaseUnavailableError(text, code=state or None)
        return QueryError(text, code=state or None)

    # -- seeding -------------------------------------------------------------------------------

    def bulk_insert(self, dbapi_connection, table, columns, batches):
        # COPY streams rows in one statement: several times faster than batched INSERTs.
        count = 0
        with dbapi_connection.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for batch in batches:
                    for row in batch:
                        copy.write_row(row)
                    count += len(batch)
        return count


@hookimpl
def sqladapter_register_dialects(register):
    register(PostgreSQL())
