"""DuckDB for sqladapter: `duckdb:///file.duckdb` URLs and bare `.duckdb` / `.ddb` paths.

Read-only by DuckDB's own configuration: the file is opened `read_only`, external access
(files, URLs, COPY, ATTACH, INSTALL/LOAD) is switched off, extensions are neither installed
nor loaded on demand, and the configuration is locked so a query cannot switch any of it back
on. A query past its time limit is stopped with `connection.interrupt()` from the dialect's
watchdog thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import time
from typing import Any, Callable, Iterator

import duckdb

from sqladapter import (
    BulkLoader,
    ConnectionConfigError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    Dialect,
    LockTimeoutError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    deadlines,
    hookimpl,
    jsontypes,
)
from sqladapter.error_rules import CONSTRAINT, READ_ONLY, TIME_LIMIT, ErrorRule

# The allowlist comes from DuckDB's catalog (duckdb_functions()): built-in scalar, aggregate
# and window functions whose stability is not VOLATILE, and built-in macros, minus
# EXCLUDED_FUNCTIONS, plus REVIEWED_FUNCTIONS. Table functions are listed one by one
# (TABLE_FUNCTIONS): most of DuckDB's read files, URLs, settings or secrets, or run SQL.
EXCLUDED_FUNCTIONS = frozenset(
    {
        # take SQL as text: parse, plan or run it where the guard never looks
        "json_serialize_sql",
        "json_deserialize_sql",
        "json_serialize_plan",
        "json_execute_serialized_sql",
        "query",
        "query_table",
        # state that outlives the query, or the query's own text
        "setseed",
        "nextval",
        "currval",
        "setval",
        "write_log",
        "current_query",
        "getenv",
    }
)
# VOLATILE in the catalog, but they only read the clock or the random generator, or wait
# (the time limit stops a wait).
REVIEWED_FUNCTIONS = frozenset({"random", "gen_random_uuid", "uuid", "uuidv4", "uuidv7", "sleep_ms", "error"})
TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "json_each",
        "json_tree",
        "duckdb_columns",
        "duckdb_databases",
        "duckdb_constraints",
        "duckdb_indexes",
        "duckdb_schemas",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "duckdb_keywords",
        "pragma_table_info",
    }
)
_CATALOG_QUERY = """
    SELECT DISTINCT function_name FROM duckdb_functions()
    WHERE internal AND (
        (function_type IN ('scalar', 'aggregate', 'window') AND stability <> 'VOLATILE')
        OR function_type = 'macro'
    )
"""
_TABLE_FUNCTIONS_QUERY = "SELECT DISTINCT function_name FROM duckdb_functions() WHERE internal AND function_type = 'table'"

# Every connection a read-only engine opens gets exactly this configuration; DuckDB refuses a
# second connection to the same file with a different one, so it never varies.
READ_ONLY_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}

_MEMORY = ("", ":memory:")
# The hint for what read-only DuckDB refuses: writes, files, URLs and extensions alike.
_READ_ONLY = f"{READ_ONLY}, without access to files, URLs or extensions"
# How often a query past its deadline is interrupted again until it stops.
_REINTERRUPT_SECONDS = 0.01
# Threads that run queries (see DuckDB.fetch); one stays busy for each query given up on.
_RUNNER_THREADS = 32
# connection.info key: the session (a duplicate connection) the query in hand runs on.
_SESSION = "sqladapter.duckdb.session"


def _close_quietly(session: Any) -> None:
    with contextlib.suppress(Exception):
        session.close()


# -- values: DuckDB's types by the JSON contract ---------------------------------------------
#
# Converters follow the column's DuckDB type, nested types included, where the contract's
# rules for the Python value alone would get it wrong: infinities, JSON text, BIGNUM digits,
# maps whose keys are not text.

# The python client hands DuckDB's infinite dates and timestamps back as the datetime module's
# own extremes: the very objects date.max, date.min, datetime.max and datetime.min. A real
# 9999-12-31 (or 0001-01-01) is a new object that only equals them, so identity, not equality,
# tells 'infinity' from the last day Python can hold.
_DATE_MAX, _DATE_MIN = dt.date.max, dt.date.min
_DATETIME_MAX, _DATETIME_MIN = dt.datetime.max, dt.datetime.min
_TIMESTAMPS = frozenset(
    {"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns", "timestamp with time zone", "timestamptz_ns"}
)
_TIMES = frozenset({"time", "time_ns", "time with time zone"})
# Map keys that come back as text; a map of them is an object. ("NULL": the empty MAP {}.)
_TEXT_KEYS = frozenset({"varchar", "enum", "null"})
# Key types the client cannot put in a dict (its KeyIsHashable): such a map arrives as
# {"key": [keys], "value": [values]} rather than as {key: value}.
_UNHASHABLE_KEYS = frozenset({"list", "array", "map", "struct", "tuple"})


def _json_value(raw: Any) -> Any:
    return jsontypes.json_value(json.loads(raw) if isinstance(raw, str) else raw)


def _date(value: Any) -> Any:
    if value is _DATE_MAX:
        return "infinity"
    if value is _DATE_MIN:
        return "-infinity"
    # Dates Python cannot hold (BC, past 9999) arrive as DuckDB's own text, and stay so.
    return value.isoformat() if isinstance(value, dt.date) else jsontypes.json_value(value)


def _timestamp(value: Any) -> Any:
    if value is _DATETIME_MAX:
        return "infinity"
    if value is _DATETIME_MIN:
        return "-infinity"
    return value.isoformat() if isinstance(value, dt.datetime) else jsontypes.json_value(value)


def _time(value: Any) -> Any:
    # '24:00:00' is a valid TIME that Python cannot hold: it arrives as that text.
    return value.isoformat() if isinstance(value, dt.time) else jsontypes.json_value(value)


def _bignum(value: Any) -> Any:
    # BIGNUM arrives as its decimal digits: within 2^53 it is a number like any integer.
    # Longer than 17 characters it is past 2^53 and stays the digits (int() of thousands of
    # digits would be refused, and is not needed).
    if isinstance(value, str) and len(value) <= 17:
        return jsontypes.json_value(int(value))
    return jsontypes.json_value(value)


def _union_member(value: Any) -> Any:
    # A UNION's rows may each hold a different member type, known only by the value.
    if value is _DATE_MAX or value is _DATETIME_MAX:
        return "infinity"
    if value is _DATE_MIN or value is _DATETIME_MIN:
        return "-infinity"
    return jsontypes.json_value(value)


def _hashable_key(key_type: Any) -> bool:
    kind = key_type.id
    if kind in _UNHASHABLE_KEYS:
        return False
    if kind == "union":
        return all(_hashable_key(member) for _, member in key_type.children)
    return True


def _inner(duck_type: Any) -> Callable[[Any], Any]:
    """The converter for values of `duck_type` nested in a list, struct or map."""
    return _value_converter(duck_type) or jsontypes.json_value


def _map_converter(duck_type: Any) -> Callable[[Any], Any]:
    (_, key_type), (_, value_type) = duck_type.children
    item = _inner(value_type)
    if key_type.id in _TEXT_KEYS and str(key_type) != "JSON":

        def as_object(value: dict) -> dict[str, Any]:
            return {k: None if v is None else item(v) for k, v in value.items()}

        return as_object
    # Keys that are not text (numbers, dates, lists, structs) would lose their type as object
    # keys, or could not be keys at all: a list of {"key", "value"} objects, in the map's order.
    key = _inner(key_type)
    if _hashable_key(key_type):

        def from_dict(value: dict) -> list[dict[str, Any]]:
            return [{"key": key(k), "value": None if v is None else item(v)} for k, v in value.items()]

        return from_dict

    def from_lists(value: dict) -> list[dict[str, Any]]:
        return [{"key": key(k), "value": None if v is None else item(v)} for k, v in zip(value["key"], value["value"])]

    return from_lists


def _value_converter(duck_type: Any) -> Callable[[Any], Any] | None:
    """How a non-null value of `duck_type` becomes JSON; None: by its Python type alone."""
    kind = getattr(duck_type, "id", None)
    if kind == "json" or str(duck_type) == "JSON":
        return _json_value
    if kind in _TIMESTAMPS:
        return _timestamp
    if kind == "date":
        return _date
    if kind in _TIMES:
        return _time
    if kind == "bignum":
        return _bignum
    if kind == "union":
        return _union_member
    if kind == "map":
        return _map_converter(duck_type)
    if kind in ("list", "array"):
        element = _value_converter(duck_type.children[0][1])
        if element is None:
            return None

        def each(value: list | tuple) -> list[Any]:
            return [None if v is None else element(v) for v in value]

        return each
    if kind in ("struct", "tuple"):
        fields = [(name, _value_converter(member)) for name, member in duck_type.children]
        if all(convert is None for _, convert in fields):
            return None
        converters = [convert or jsontypes.json_value for _, convert in fields]
        if kind == "tuple":  # unnamed: ROW(1, 'a') arrives as a tuple, and is an array

            def positions(value: tuple) -> list[Any]:
                return [None if v is None else convert(v) for convert, v in zip(converters, value)]

            return positions
        by_name = {name: convert for (name, _), convert in zip(fields, converters)}

        def by_field(value: dict) -> dict[str, Any]:
            return {k: None if v is None else by_name[k](v) for k, v in value.items()}

        return by_field
    return None


class DuckDB(Dialect):
    name = "duckdb"
    backends = ("duckdb",)
    drivername = "duckdb"
    extensions = (".duckdb", ".ddb")
    grammar = "duckdb"
    paramstyles = ("qmark",)
    # A file open read-only in this process cannot be opened read-write beside it.
    one_mode_per_file = True
    driver_errors = (duckdb.Error,)
    error_rules = (
        ErrorRule(QueryTimeoutError, TIME_LIMIT, types=(duckdb.InterruptException,)),
        ErrorRule(PermissionDeniedError, _READ_ONLY, types=(duckdb.PermissionException,)),
        ErrorRule(PermissionDeniedError, _READ_ONLY, phrases=("read-only mode", "configuration has been locked")),
        ErrorRule(LockTimeoutError, types=(duckdb.TransactionException,), phrases=("conflict",)),
        ErrorRule(ConstraintViolationError, CONSTRAINT, types=(duckdb.ConstraintException,)),
        ErrorRule(DatabaseUnavailableError, types=(duckdb.IOException, duckdb.ConnectionException, duckdb.FatalException)),
        ErrorRule(QueryError, "select fewer rows or columns, or aggregate in the query", types=(duckdb.OutOfMemoryException,)),
        ErrorRule(QueryError),
    )

    def __init__(self) -> None:
        # Closed with the Runtime that registered this dialect (its threads start on first use).
        self._runner: concurrent.futures.ThreadPoolExecutor | None = self._new_runner()
        # Interrupts connections whose deadline has passed. DuckDB clears an interrupt when a
        # query starts, so one that arrived before the query got going is lost: it interrupts
        # again every _REINTERRUPT_SECONDS until the query's block releases it. An interrupt
        # that lands between two queries is harmless (the next query resets it).
        self._watchdog = deadlines.Watchdog("sqladapter-duckdb-watchdog")

    @staticmethod
    def _new_runner() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(_RUNNER_THREADS, thread_name_prefix="sqladapter-duckdb")

    def close(self):
        self._watchdog.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.shutdown(wait=False)

    def engine_options(self, url, *, read_only):
        options: dict[str, Any] = {
            # A local file: nothing to ping, nothing to recycle. Statements autocommit and the
            # database is read-only, so there is nothing to roll back on return either.
            "pool_reset_on_return": None,
        }
        if read_only:
            connect_args: dict[str, Any] = {"config": dict(READ_ONLY_CONFIG)}
            if (url.database or "") not in _MEMORY:
                connect_args["read_only"] = True
            options["connect_args"] = connect_args
        return options

    def create_engine(self, url, *, read_only):
        if read_only:
            # duckdb_engine lets options in the URL override connect_args: refuse the ones
            # that would undo read-only mode rather than let a connection string turn them off.
            undone = sorted(k for k in url.query if k.lower() in READ_ONLY_CONFIG or k.lower() in ("access_mode", "read_only"))
            if undone:
                raise ConnectionConfigError(
                    f"duckdb: the connection sets {', '.join(undone)}, which queries cannot change: they run "
                    "read-only, without external access; remove it from the connection's URL"
                )
        return super().create_engine(url, read_only=read_only)

    def allowed_functions(self, dbapi_connection):
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(_CATALOG_QUERY)
            names = {row[0].lower() for row in cursor.fetchall()}
            cursor.execute(_TABLE_FUNCTIONS_QUERY)
            table_functions = {row[0].lower() for row in cursor.fetchall()}
        finally:
            cursor.close()
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT DISTINCT function_name FROM duckdb_functions() WHERE internal")
            every = {row[0].lower() for row in cursor.fetchall()}
        finally:
            cursor.close()
        return frozenset((names - EXCLUDED_FUNCTIONS) | (REVIEWED_FUNCTIONS & every) | (TABLE_FUNCTIONS & table_functions))

    def begin_write(self, connection, limits):
        # DuckDB's connections autocommit each statement: a write's statements and its ledger
        # record need a transaction of their own.
        connection.dbapi_connection.execute("BEGIN TRANSACTION")

    def thread_may_keep(self, connection):
        # Statements autocommit, the database is read-only, and each task has a session of its
        # own (see fetch): nothing is left to undo.
        return True

    @contextlib.contextmanager
    def time_limit(self, connection, limits) -> Iterator[None]:
        # DuckDB has no statement timeout: the watchdog interrupts whatever runs on this
        # connection at the deadline, the task's own session (see fetch) or, for a write, the
        # connection itself.
        raw, info = connection.dbapi_connection, connection.info

        def interrupt(_stage: int) -> None:
            with contextlib.suppress(Exception):
                (info.get(_SESSION) or raw).interrupt()

        token, _ = self._watchdog.watch(limits.deadline, interrupt, every=_REINTERRUPT_SECONDS, stages=None, inline=True)
        try:
            yield
        finally:
            self._watchdog.release(token)
        if time.monotonic() > limits.deadline:
            # An answer that came after the limit (the call did not look at the interrupt) is
            # reported as the limit, as it would have been had the query been stopped.
            raise QueryTimeoutError(f"duckdb: the query ran past its {limits.timeout_ms} ms time limit and was stopped")

    def fetch(self, connection, sql, params, limits):
        # Each task runs on a session of its own, a duplicate of the pooled connection: DuckDB
        # keeps temporary tables, variables and settings per session, so none of them reaches
        # the next task, whatever got past the guard. It shares the database and its locked
        # configuration, and costs about 3 us.
        session = connection.dbapi_connection.duplicate()
        connection.info[_SESSION] = session
        # DuckDB runs a query inside the worker's process, and some work (list_sort over tens of
        # millions of elements) happens inside one call that interrupt() cannot stop. So the
        # query runs on a thread of its own, and the task gives up waiting two grace periods
        # past its limit: it reports on time, and the connection is left to finish the call
        # and is then closed, never used again. The handoff costs one thread switch.
        if self._runner is None:  # used again after its Runtime closed
            self._runner = self._new_runner()
        # DuckDB streams the result, so fetchmany reads `limits.rows` at most.
        future = self._runner.submit(self.execute_and_fetch, session, sql, params, limits)
        wait = max(0.0, limits.deadline - time.monotonic()) + 2 * deadlines.GRACE_SECONDS
        try:
            return future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            connection.info.pop(_SESSION, None)
            future.add_done_callback(lambda _: _close_quietly(session))
            self.give_up(connection, future)
            raise QueryTimeoutError(
                "duckdb: the query ran past its time limit inside one call that DuckDB does not interrupt; "
                "the worker stopped waiting for it. Make the query cheaper (smaller lists, fewer rows) or raise timeout_ms"
            ) from None
        finally:
            if connection.info.pop(_SESSION, None) is session:  # finished: not left to a call still running
                _close_quietly(session)

    def column_type(self, column, sample):
        return str(column[1])

    def converter(self, column, sample) -> Callable[[Any], Any] | None:
        name, duck_type = column[0], column[1]
        convert = _value_converter(duck_type)
        if convert is None:
            return jsontypes.converter_for(sample, name, str(duck_type))
        return jsontypes.named(convert, name, str(duck_type))

    def error_code(self, exc):
        # DuckDB has no error codes: its exception class names the kind of error.
        return type(exc).__name__


class DuckDBLoader(BulkLoader):
    def bulk_insert(self, dialect, dbapi_connection, table, columns, batches):
        # DuckDB's executemany runs one statement per row (about 2,000 rows a second); its CSV
        # reader loads a million rows in under a second. Without pyarrow or pandas installed,
        # a temporary CSV file is the fastest way in.
        import csv
        import os
        import tempfile

        count = 0
        with tempfile.TemporaryDirectory(prefix="sqladapter-seed-") as directory:
            path = os.path.join(directory, "rows.csv")
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                for batch in batches:
                    writer.writerows(batch)
                    count += len(batch)
            if count:
                literal = path.replace("'", "''")
                dbapi_connection.execute(f"COPY {table} ({', '.join(columns)}) FROM '{literal}' (FORMAT csv, HEADER false)")
        return count


DuckDB.bulk_loader = DuckDBLoader()


@hookimpl
def sqladapter_register_dialects(register):
    register(DuckDB())
