"""DuckDB for sqladapter: `duckdb:///file.duckdb` URLs and bare `.duckdb` / `.ddb` paths.

Read-only by DuckDB's own configuration: the file is opened `read_only`, external access
(files, URLs, COPY, ATTACH, INSTALL/LOAD) is switched off, extensions are neither installed
nor loaded on demand, and the configuration is locked so a query cannot switch any of it back
on. A query past its time limit is stopped with `connection.interrupt()` from one shared
watchdog thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import threading
import time
from typing import Any, Callable, Iterator

import duckdb

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
# How often a query past its deadline is interrupted again until it stops.
_REINTERRUPT_SECONDS = 0.01


class _Watchdog:
    """One daemon thread that interrupts connections whose deadline has passed.

    A thread per query would cost more than a point lookup itself.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, Any] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, connection: Any) -> int:
        """Interrupt `connection` at `deadline` (time.monotonic) unless released first."""
        token = next(self._tokens)
        with self._condition:
            self._watched[token] = connection
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sqladapter-duckdb-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][1] == token:
                self._condition.notify()
        return token

    def release(self, token: int) -> None:
        """Stop watching; once this returns, that connection is not interrupted for it again."""
        with self._condition:
            self._watched.pop(token, None)
            # Released entries stay in the heap until they surface; rebuild when they dominate.
            if len(self._heap) > 64 and len(self._heap) > 4 * len(self._watched):
                self._heap = [entry for entry in self._heap if entry[1] in self._watched]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._condition:
            while True:
                while self._heap and self._heap[0][1] not in self._watched:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._condition.wait()
                    continue
                deadline, token = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._condition.wait(delay)
                    continue
                heapq.heappop(self._heap)
                connection = self._watched[token]
                # Under the lock, so `release` returning means no late interrupt; an interrupt
                # that lands between two queries is harmless (the next query resets it).
                with contextlib.suppress(Exception):
                    connection.interrupt()
                # DuckDB clears an interrupt when a query starts, so one that arrived before the
                # query got going is lost: keep interrupting until the query's block releases it.
                heapq.heappush(self._heap, (time.monotonic() + _REINTERRUPT_SECONDS, token))
                # This daemon thread outlives the interpreter's cleanup; holding the connection
                # while it waits would keep DuckDB objects alive past shutdown.
                del connection


_watchdog = _Watchdog()


def _json_value(raw: Any) -> Any:
    return jsontypes.to_json(json.loads(raw)) if isinstance(raw, str) else jsontypes.to_json(raw)


def _pairs(value: dict) -> list[list[Any]]:
    return [[jsontypes.to_json(k), jsontypes.to_json(v)] for k, v in value.items()]


class DuckDB(Dialect):
    name = "duckdb"
    backends = ("duckdb",)
    driver = "duckdb"
    extensions = (".duckdb", ".ddb")
    grammar = "duckdb"
    paramstyles = ("qmark",)
    package = "sqladapter-duckdb"

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

    def keeps_connection(self, connection):
        # Statements autocommit and the database is read-only: nothing is left to undo.
        return True

    @contextlib.contextmanager
    def time_limit(self, connection, timeout_ms: int) -> Iterator[None]:
        token = _watchdog.watch(time.monotonic() + timeout_ms / 1000, connection.dbapi_connection)
        try:
            yield
        finally:
            _watchdog.release(token)

    def fetch(self, connection, sql, params, limit):
        # The engine's connection wrapper forwards to the DuckDB connection; its cursor would
        # only add a layer. DuckDB streams the result, so fetchmany reads `limit` rows at most.
        return self.execute_and_fetch(connection.dbapi_connection, sql, params, limit)

    def column_type(self, column, sample):
        return str(column[1])

    def converter(self, column, sample) -> Callable[[Any], Any] | None:
        duck_type = column[1]
        kind = getattr(duck_type, "id", None)
        if kind == "json" or str(duck_type) == "JSON":
            return _json_value
        if kind == "union":
            # Each row may hold a different member type.
            return jsontypes.to_json
        if kind == "map":
            key_type = dict(duck_type.children).get("key")
            if key_type is not None and getattr(key_type, "id", None) != "varchar":
                return _pairs
        return jsontypes.converter_for(sample)

    def classify(self, exc):
        if not isinstance(exc, duckdb.Error):
            return None
        code = type(exc).__name__
        text = f"duckdb: {str(exc).strip()}"
        lowered = text.lower()
        if isinstance(exc, duckdb.InterruptException):
            return QueryTimeoutError("duckdb: the query ran past its time limit and was stopped", code=code)
        if isinstance(exc, duckdb.PermissionException) or "read-only mode" in lowered or "configuration has been locked" in lowered:
            return PermissionDeniedError(
                f"{text} (queries run read-only, without access to files, URLs or extensions)", code=code
            )
        if isinstance(exc, duckdb.TransactionException) and "conflict" in lowered:
            return LockTimeoutError(text, code=code)
        if isinstance(exc, (duckdb.IOException, duckdb.ConnectionException, duckdb.FatalException)):
            return DatabaseUnavailableError(text, code=code)
        if isinstance(exc, duckdb.OutOfMemoryException):
            return QueryError(f"{text}; select fewer rows or columns, or aggregate in the query", code=code)
        return QueryError(text, code=code)

    # -- seeding -------------------------------------------------------------------------------

    def bulk_insert(self, dbapi_connection, table, columns, batches):
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
                dbapi_connection.execute(
                    f"COPY {table} ({', '.join(columns)}) FROM '{literal}' (FORMAT csv, HEADER false)"
                )
        return count


@hookimpl
def sqladapter_register_dialects(register):
    register(DuckDB())
