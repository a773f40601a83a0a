"""`Dialect`: what a plugin declares about one database.

A plugin subclasses `Dialect`, sets the class attributes, overrides only the methods where its
database differs from the defaults, and registers an instance from its
`sqladapter_register_dialects` hook. SQLAlchemy already knows how to connect; a dialect adds
what SQLAlchemy lacks: which connection strings it claims, how to make a connection read-only
and time-limited, how its values become JSON, and which of its errors are worth retrying.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Sequence

import orjson
import sqlalchemy

from . import error_rules, errors, guard, jsontypes
from .error_rules import ErrorRule

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.pool import PoolProxiedConnection

__all__ = ["BulkLoader", "Dialect", "Limits"]

# A DB-API cursor.description entry: (name, type_code, display_size, internal_size, precision, scale, null_ok)
ColumnDescription = Sequence[Any]


@dataclass(frozen=True)
class Limits:
    """What one task may take, handed to the dialect with the query it runs."""

    #: Rows to read at most: the task's max_rows plus one, so that a longer result shows.
    rows: int
    #: The task's time limit.
    timeout_ms: int
    #: Stop reading rows once they hold this many bytes of JSON (SQLADAPTER_MAX_OUTPUT_BYTES).
    output_bytes: int
    #: When the time limit runs out, on the time.monotonic() clock.
    deadline: float


#: connection.info key set by `Dialect.give_up`: the connection left its pool while a call still
#: runs on it, and it closes once that call ends.
ABANDONED = "sqladapter.abandoned"

# Rows asked of the driver at once by `Dialect.fetch_rows`: the first chunk, and the most.
_FIRST_CHUNK = 16
_MAX_CHUNK = 4096


def _json_size_at_least(rows: Sequence[Any]) -> int:
    """Bytes these rows take at least in the task's JSON output.

    orjson measures what it can write itself in C; it calls back only for the values it cannot
    (bytes, Decimal, large integers, a driver's own types), and those are counted here by their
    real size, so a result of megabyte blobs is as bounded as one of megabyte strings.
    """
    extra = 0

    def measure(value: Any) -> None:
        nonlocal extra
        if isinstance(value, (bytes, bytearray, memoryview)):
            extra += len(value) * 4 // 3 + 16  # {"$base64": "..."}
        else:
            extra += len(str(value))

    try:
        return len(orjson.dumps(rows, default=measure, option=orjson.OPT_NON_STR_KEYS)) + extra
    except TypeError:  # an integer past 64 bits: count text and binary values, and the rest as text
        return sum(len(v) if isinstance(v, (str, bytes, bytearray)) else len(str(v)) for row in rows for v in row)


class Dialect:
    """One database as sqladapter sees it. Subclass, set the attributes, override what differs."""

    #: Short name users see in outputs and errors: "sqlite", "postgresql".
    name: ClassVar[str] = ""
    #: URL schemes (SQLAlchemy drivernames) this dialect claims: ("sqlite", "sqlite+pysqlite").
    backends: ClassVar[tuple[str, ...]] = ()
    #: The SQLAlchemy drivername (URL scheme) the engine is made with, whichever claimed scheme
    #: the user wrote: "postgresql+psycopg".
    drivername: ClassVar[str] = ""
    #: File extensions claimed for bare paths (".db"). Non-empty means the database is a file,
    #: and inline paths are confined to the data directory.
    extensions: ClassVar[tuple[str, ...]] = ()
    #: sqlglot grammar used by the read-only guard ("sqlite", "postgres", "mysql", "duckdb").
    grammar: ClassVar[str | None] = None
    #: Placeholder styles the driver accepts, best first, from: "named" (:name), "qmark" (?),
    #: "pyformat" (%(name)s and %s), "numeric_dollar" ($1), "named_dollar" ($name).
    paramstyles: ClassVar[tuple[str, ...]] = ("qmark",)
    #: The functions and table functions a query may call, lower-case, for a dialect whose
    #: database has no catalog to derive them from (see `allowed_functions`).
    functions: ClassVar[frozenset[str]] = frozenset()
    #: Options an inline URL (from task input) may carry after '?'. Each must be harmless
    #: whatever its value; everything else belongs in a named connection set up by the operator.
    inline_url_options: ClassVar[frozenset[str]] = frozenset()
    #: False where one column may hold values of different types (SQLite), so every value is checked.
    typed_columns: ClassVar[bool] = True
    #: True where the database stops sooner when the SQL says how many rows will be read than
    #: when the driver stops reading (a streamed PostgreSQL query can only be cancelled): the
    #: core then appends LIMIT max_rows + 1 to a top-level SELECT without a LIMIT of its own.
    row_limit_in_sql: ClassVar[bool] = False
    #: The driver's exception classes (or their names) that `error_rules` classify; any other
    #: exception is left to the core's defaults. Empty: the rules see every exception.
    driver_errors: ClassVar[tuple[type[BaseException] | str, ...]] = ()
    #: What the driver's errors mean, first match wins: see `sqladapter.error_rules`.
    error_rules: ClassVar[tuple[ErrorRule, ...]] = ()
    #: How `sqladapter seed` writes this database's demo tables (the only writes it makes).
    bulk_loader: ClassVar[BulkLoader]
    #: Functions an `execute_sql` statement may call besides `allowed_functions`, lower-case:
    #: write-only syntax that reads as a call (MySQL's VALUES(col) in ON DUPLICATE KEY UPDATE).
    write_functions: ClassVar[frozenset[str]] = frozenset()
    #: True where one process cannot hold a database file open read-only and read-write at once
    #: (DuckDB): a write then closes the file's read-only engines first, and its own after.
    one_mode_per_file: ClassVar[bool] = False

    # -- engines -------------------------------------------------------------------------------

    def engine_options(self, url: URL, *, read_only: bool) -> dict[str, Any]:
        """Keyword arguments for `sqlalchemy.create_engine` (pool settings, connect_args)."""
        # A query may be the first after a server restart or an idle timeout: pre-ping on
        # checkout and recycle before common server-side idle limits.
        return {"pool_pre_ping": True, "pool_recycle": 1800}

    def on_connect(self, dbapi_connection: Any, *, read_only: bool) -> None:
        """Prepare each new DB-API connection; with `read_only`, make the session refuse writes."""

    def create_engine(self, url: URL, *, read_only: bool) -> Engine:
        """Make the pooled engine for a resolved URL. Called once per URL and mode, then cached."""
        engine = sqlalchemy.create_engine(url, **self.engine_options(url, read_only=read_only))

        def connect(dbapi_connection: Any, _record: Any) -> None:
            self.on_connect(dbapi_connection, read_only=read_only)

        sqlalchemy.event.listen(engine, "connect", connect)
        return engine

    def url_for_path(self, path: str) -> URL:
        """The URL for a bare database file path this dialect claims by extension."""
        return sqlalchemy.engine.URL.create(self.drivername, database=path)

    # -- checking a query ----------------------------------------------------------------------

    def allowed_functions(self, dbapi_connection: Any) -> frozenset[str]:
        """The functions a query may call on this database, lower-case. Called once per engine.

        Derive them from the database's catalog where it has one: its built-in functions that
        are marked free of side effects, minus any that run SQL given as text or reach files,
        other sessions or server state, plus a short reviewed list. The default is `functions`.
        """
        return self.functions

    def compile(self, sql: str, allowed: frozenset[str]) -> guard.Checked:
        """Check `sql` and return the canonical text the database will run instead of it.

        The default parses with sqlglot's `grammar`. A dialect whose database's own parser is
        available as a library overrides this, and `check_tree` for the trees it makes.
        """
        return guard.compile_sqlglot(sql, self.grammar or "", allowed, self)

    def check_tree(self, tree: Any, allowed: frozenset[str]) -> None:
        """Raise NotReadOnlyError unless `tree`, from this dialect's own parser, only reads."""
        raise NotImplementedError(f"{self.name} compiles queries with its own parser but does not check its trees")

    def compile_write(self, sql: str, allowed: frozenset[str]) -> guard.Checked:
        """Check one `execute_sql` statement (INSERT, UPDATE, DELETE, upsert or MERGE) and return
        the canonical text the database will run instead of it.

        A separate entry point from `compile`, so that the query path's check is never
        loosened: the same parser and canonical-SQL path, a DML allowlist instead of the
        read-only one (`guard.check_write`).
        """
        return guard.compile_sqlglot(sql, self.grammar or "", allowed, self, write=True)

    def check_write_tree(self, tree: Any, allowed: frozenset[str]) -> None:
        """Raise NotDmlError unless `tree`, from this dialect's own parser, is one allowed DML statement."""
        raise NotImplementedError(f"{self.name} compiles statements with its own parser but does not check its trees")

    # -- running a write -------------------------------------------------------------------------

    def begin_write(self, connection: PoolProxiedConnection, limits: Limits) -> None:
        """Start the transaction an `execute_sql` task runs in, on a connection of the
        read-write engine, and set what the session needs for it (time and lock limits).

        The default relies on the DB-API, which begins a transaction at the first statement.
        """

    def write_cursor(self, connection: PoolProxiedConnection) -> Any:
        """A cursor that runs canonical SQL with placeholders in `paramstyles[0]` on a read-write connection."""
        return connection.cursor()

    def execute_write(
        self, connection: PoolProxiedConnection, sql: str, params: Any, limits: Limits, *, many: bool, returning: bool
    ) -> tuple[int, Sequence[ColumnDescription], list[Sequence[Any]]]:
        """Run one write statement (`many`: once per parameter set in `params`, as one batch);
        return (rows affected, cursor.description, at most `limits.rows` RETURNING rows).

        A batch goes to the driver's `executemany`; a dialect with a faster path overrides it.
        """
        cursor = self.write_cursor(connection)
        try:
            if many:
                cursor.executemany(sql, params)
            elif params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, params)
            if not returning:
                return cursor.rowcount, (), []
            description = cursor.description or ()
            # Every RETURNING row is read (the statement is done only then, and the count is
            # theirs), but no more than the task can return are kept.
            rows: list[Sequence[Any]] = []
            counted = 0
            while True:
                batch = cursor.fetchmany(_MAX_CHUNK)
                if not batch:
                    break
                counted += len(batch)
                if len(rows) < limits.rows:
                    rows.extend(batch[: limits.rows - len(rows)])
            count = cursor.rowcount
            return (count if isinstance(count, int) and count >= counted else counted), description, rows
        finally:
            cursor.close()

    def commit_write(self, connection: PoolProxiedConnection) -> None:
        """Commit the transaction `begin_write` began."""
        connection.commit()

    def rollback_write(self, connection: PoolProxiedConnection) -> None:
        """Roll back the transaction `begin_write` began."""
        connection.rollback()

    # -- running a query -----------------------------------------------------------------------

    @contextlib.contextmanager
    def time_limit(self, connection: PoolProxiedConnection, limits: Limits) -> Iterator[None]:
        """Stop a statement run inside this block after `limits.timeout_ms`; a stopped statement
        must raise an error that `classify` reports as `QueryTimeoutError`."""
        yield

    def cancel(self, engine: Engine, dbapi_connection: Any, *, end_session: bool) -> None:
        """Stop the statement running on `dbapi_connection`, called from another thread.

        Called when a query is still running a grace period past its time limit (the database's
        own limit did not stop it), and with `end_session` one grace period later if it still
        runs. Cancel the statement the way the database allows from outside (a cancel request,
        KILL QUERY from a control connection made with `engine`), and with `end_session` end the
        session itself, so that the blocked driver call returns. A dialect whose own time limit
        already stops whatever it can (SQLite's progress handler, DuckDB's interrupt) leaves
        this alone, and its queries are then not watched at all.
        """

    def fetch(
        self, connection: PoolProxiedConnection, sql: str, params: Any, limits: Limits
    ) -> tuple[Sequence[ColumnDescription], list[Sequence[Any]]]:
        """Execute `sql` and return (cursor.description, at most `limits.rows` rows).

        Read through `fetch_rows`, which stops at `limits.output_bytes`; override with a
        streaming or server-side cursor where the driver would otherwise buffer the whole result.
        """
        cursor = connection.cursor()
        try:
            return self.execute_and_fetch(cursor, sql, params, limits)
        finally:
            cursor.close()

    def execute_and_fetch(
        self, cursor: Any, sql: str, params: Any, limits: Limits
    ) -> tuple[Sequence[ColumnDescription], list[Sequence[Any]]]:
        """Execute on anything with the DB-API `execute`/`description`/`fetchmany` (a cursor,
        or a DuckDB connection) and read the rows through `fetch_rows`."""
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        description = cursor.description
        if description is None:
            return (), []
        return description, self.fetch_rows(cursor.fetchmany, limits)

    def fetch_rows(self, fetchmany: Callable[[int], Sequence[Any]], limits: Limits) -> list[Any]:
        """At most `limits.rows` rows from a cursor's `fetchmany`, read in chunks.

        Reading stops early once the rows read hold more JSON than `limits.output_bytes`: the
        output budget would drop the rest anyway, and so a result of a few hundred one-megabyte
        rows never sits whole in the worker's memory. The output is then over budget, and the
        core trims it and marks it truncated.
        """
        limit, budget = limits.rows, limits.output_bytes
        rows: list[Any] = []
        size = 0
        chunk = min(limit, _FIRST_CHUNK)
        while True:
            batch = fetchmany(chunk)
            rows.extend(batch)
            if len(batch) < chunk or len(rows) >= limit:
                return rows
            size += _json_size_at_least(batch)
            if size > budget:
                return rows
            # Grow the chunk while the rows are narrow, shrink it when they are wide.
            average = size // len(rows) + 1
            chunk = max(1, min(limit - len(rows), chunk * 4, _MAX_CHUNK, (budget - size) // average + 1))

    def give_up(self, connection: PoolProxiedConnection, call: concurrent.futures.Future[Any]) -> None:
        """Leave `connection` to a driver call still running on another thread, past its deadline.

        The connection leaves its pool at once, is never used again, and is closed once `call`
        ends. For a dialect whose `fetch` waits on a thread of its own (DuckDB).
        """
        raw = connection.dbapi_connection
        connection.detach()
        connection.info[ABANDONED] = True
        call.add_done_callback(lambda _: _close_quietly(raw))

    def thread_may_keep(self, connection: PoolProxiedConnection) -> bool:
        """Whether a worker thread may keep this connection between queries, out of the pool.

        Say yes only where `fetch` leaves nothing open behind it (no transaction, autocommit or
        none needed, no session state a later query must not see): a kept connection skips the
        pool's checkout, pre-ping and rollback-on-return. A failed query still returns it.
        """
        return False

    def column_type(self, column: ColumnDescription, sample: Any) -> str:
        """The type name reported in `columns`; `sample` is the column's first non-null value."""
        type_code = column[1]
        if isinstance(type_code, str) and type_code:
            return type_code
        return jsontypes.type_name(sample)

    def converter(self, column: ColumnDescription, sample: Any) -> Callable[[Any], Any] | None:
        """How to turn this column's values into JSON, chosen once per column and result.

        `sample` is the first non-null value. None means the values are JSON already.
        """
        return jsontypes.converter_for(sample)

    def error_code(self, exc: BaseException) -> str | int | None:
        """The driver's code for `exc` (an SQLSTATE, an error number), matched by `error_rules`
        and carried by the error; None where the driver gives none."""
        return None

    def error_text(self, exc: BaseException) -> str:
        """The driver's own message for `exc`, as the error message quotes it."""
        return str(exc).strip()

    def classify(self, exc: BaseException) -> errors.SqlAdapterError | None:
        """Map a driver exception to an error class with its code, or None for the core's defaults.

        The default applies `error_rules`; override only for what rules cannot say.
        """
        return error_rules.classify(self, exc)

    def close(self) -> None:
        """Release what this dialect holds (threads, control connections); its Runtime is closing."""

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"


def _close_quietly(raw: Any) -> None:
    with contextlib.suppress(Exception):
        raw.close()


class BulkLoader:
    """How `sqladapter seed` writes a table: the only writes sqladapter makes, on a read-write
    connection of their own. A dialect whose database has a faster bulk path overrides it."""

    def bulk_insert(
        self,
        dialect: Dialect,
        dbapi_connection: Any,
        table: str,
        columns: Sequence[str],
        batches: Iterable[Sequence[Sequence[Any]]],
    ) -> int:
        """Insert `batches` (lists of row tuples) into `table`; return the row count. The caller commits.

        `table` and `columns` arrive quoted. Override with the database's bulk path (COPY, ...).
        """
        marks = ", ".join(_placeholders(dialect.paramstyles, len(columns)))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        cursor = dbapi_connection.cursor()
        count = 0
        try:
            for batch in batches:
                cursor.executemany(sql, batch)
                count += len(batch)
        finally:
            cursor.close()
        return count

    def replace_table(self, connection: sqlalchemy.Connection, staging: str, table: str) -> None:
        """Put the loaded `staging` table in place of `table`, inside the caller's transaction.

        Correct where DDL is transactional (SQLite, PostgreSQL, DuckDB); override where it is not.
        """
        quote = connection.dialect.identifier_preparer.quote
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(table)}")
        connection.exec_driver_sql(f"ALTER TABLE {quote(staging)} RENAME TO {quote(table)}")


Dialect.bulk_loader = BulkLoader()


def _placeholders(paramstyles: Sequence[str], count: int) -> list[str]:
    # Positional placeholders in the first style the driver accepts that has one.
    for style in paramstyles:
        if style == "qmark":
            return ["?"] * count
        if style in ("pyformat", "format"):
            return ["%s"] * count
        if style == "numeric_dollar":
            return [f"${i}" for i in range(1, count + 1)]
        if style == "numeric":
            return [f":{i}" for i in range(1, count + 1)]
    raise ValueError(f"no positional placeholder style among {paramstyles}")
