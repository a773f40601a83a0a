"""Bounded memory: a query reads max_rows + 1 rows from the driver however big the table is.

Counted at the DB-API boundary, on every dialect, against real databases: the dialect's fetch
gets its connection wrapped so that every row a driver cursor (or DuckDB's connection) hands
back is counted. The drivers are used the way the dialects use them: SQLite and DuckDB step
through the result, MySQL/MariaDB reads an unbuffered cursor under sql_select_limit,
PostgreSQL streams; none of them holds the rest of the table, so the rows counted are the
rows read.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from servers import MYSQL_HOST, POSTGRESQL_HOST, mysql_admin, postgresql_admin, server_unavailable

from sqladapter import run_query
from sqladapter.runtime import default

TABLE_ROWS = 50_000
DATABASE = "sqla_bench"
TABLE = "bounded_rows"


class Counter:
    rows = 0


class _Counting:
    """A DB-API connection or cursor that counts the rows it returns."""

    def __init__(self, target: Any, counter: Counter) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_counter", counter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def cursor(self, *args: Any, **kwargs: Any) -> _Counting:
        return _Counting(self._target.cursor(*args, **kwargs), self._counter)

    def fetchone(self) -> Any:
        row = self._target.fetchone()
        self._counter.rows += row is not None
        return row

    def fetchmany(self, *args: Any, **kwargs: Any) -> list:
        rows = self._target.fetchmany(*args, **kwargs)
        self._counter.rows += len(rows)
        return rows

    def fetchall(self) -> list:
        rows = self._target.fetchall()
        self._counter.rows += len(rows)
        return rows

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        inner = self._target.stream(*args, **kwargs)
        try:
            for row in inner:
                self._counter.rows += 1
                yield row
        finally:
            inner.close()

    def __iter__(self) -> Any:
        for row in self._target:
            self._counter.rows += 1
            yield row

    def __enter__(self) -> _Counting:
        self._target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._target.__exit__(*exc)


class _CountingPooled:
    """The pool's connection as a dialect's fetch sees it, its driver connection counting."""

    def __init__(self, pooled: Any, counter: Counter) -> None:
        self._pooled = pooled
        self._counter = counter
        self.dbapi_connection = _Counting(pooled.dbapi_connection, counter)

    def cursor(self, *args: Any, **kwargs: Any) -> _Counting:
        return _Counting(self._pooled.cursor(*args, **kwargs), self._counter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pooled, name)


@pytest.fixture
def counted(monkeypatch):
    """Count the rows each dialect's fetch reads from its driver."""
    counter = Counter()

    def count(dialect_name: str) -> Counter:
        dialect = default().registry.by_name[dialect_name]
        original = dialect.fetch

        def fetch(connection: Any, sql: str, params: Any, limit: int) -> Any:
            return original(_CountingPooled(connection, counter), sql, params, limit)

        monkeypatch.setattr(dialect, "fetch", fetch)
        return counter

    return count


def _sqlite(data_dir) -> str:
    conn = sqlite3.connect(data_dir / "big.db")
    conn.execute("CREATE TABLE bounded_rows (id INTEGER PRIMARY KEY, name TEXT, zip_code TEXT)")
    conn.execute(
        f"INSERT INTO bounded_rows WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {TABLE_ROWS}) "
        "SELECT i, 'Name' || i, printf('%05d', i % 100000) FROM n"
    )
    conn.commit()
    conn.close()
    return "big.db"


def _duckdb(data_dir) -> str:
    duckdb = pytest.importorskip("duckdb")
    conn = duckdb.connect(str(data_dir / "big.duckdb"))
    conn.execute(
        f"CREATE TABLE bounded_rows AS SELECT i AS id, 'Name' || i AS name, printf('%05d', i % 100000) AS zip_code "
        f"FROM range(1, {TABLE_ROWS + 1}) AS t(i)"
    )
    conn.close()
    return "big.duckdb"


def _mysql() -> str:
    with mysql_admin() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
        cursor.execute(f"USE {DATABASE}")
        if not _has_rows(cursor):
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cursor.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, name VARCHAR(40), zip_code CHAR(5))")
            cursor.execute(
                f"INSERT INTO {TABLE} SELECT seq, CONCAT('Name', seq), LPAD(seq % 100000, 5, '0') FROM seq_1_to_{TABLE_ROWS}"
            )
    return f"mysql+pymysql://root@{MYSQL_HOST}/{DATABASE}"


def _postgresql() -> str:
    with postgresql_admin() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DATABASE}")
    with postgresql_admin(DATABASE) as conn, conn.cursor() as cursor:
        if not _has_rows(cursor):
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cursor.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, name TEXT, zip_code TEXT)")
            cursor.execute(
                f"INSERT INTO {TABLE} SELECT i, 'Name' || i, lpad((i % 100000)::text, 5, '0') "
                f"FROM generate_series(1, {TABLE_ROWS}) AS i"
            )
    return f"postgresql+psycopg://postgres@{POSTGRESQL_HOST}/{DATABASE}"


def _has_rows(cursor: Any) -> bool:
    try:
        cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
    except Exception:
        if hasattr(cursor, "connection") and hasattr(cursor.connection, "rollback"):
            cursor.connection.rollback()
        return False
    return cursor.fetchone()[0] == TABLE_ROWS


@pytest.fixture(params=["sqlite", "duckdb", "mysql", "postgresql"])
def big_table(request, data_dir) -> tuple[str, str]:
    """(dialect name, connection string) of a database holding bounded_rows, 50,000 rows."""
    name = request.param
    if name == "sqlite":
        return name, _sqlite(data_dir)
    if name == "duckdb":
        return name, _duckdb(data_dir)
    try:
        default().registry.for_backend(name)
    except Exception as exc:
        server_unavailable(f"the {name} dialect is not installed: {exc}")
    return name, _mysql() if name == "mysql" else _postgresql()


def test_select_star_reads_max_rows_plus_one_rows_from_the_driver(big_table, counted):
    name, connection_string = big_table
    counter = counted(name)
    out = run_query(connection_string=connection_string, query=f"SELECT * FROM {TABLE} ORDER BY id")
    assert out["rowCount"] == 1000 and out["truncated"] is True
    assert out["rows"][-1]["id"] == 1000
    assert counter.rows == 1001


def test_a_lower_max_rows_reads_fewer_rows_and_the_next_query_is_bounded_too(big_table, counted):
    name, connection_string = big_table
    counter = counted(name)
    out = run_query(connection_string=connection_string, query=f"SELECT * FROM {TABLE}", max_rows=10)
    assert out["rowCount"] == 10 and out["truncated"] is True
    assert counter.rows == 11
    # Again on the same (kept or pooled) connection: nothing left over from the first query.
    counter.rows = 0
    out = run_query(connection_string=connection_string, query=f"SELECT id FROM {TABLE} ORDER BY id", max_rows=3)
    assert [row["id"] for row in out["rows"]] == [1, 2, 3]
    assert counter.rows == 4


def test_fetch_one_reads_two_rows(big_table, counted):
    name, connection_string = big_table
    counter = counted(name)
    out = run_query(connection_string=connection_string, query=f"SELECT name FROM {TABLE} ORDER BY id", fetch="one")
    assert out["row"] == {"name": "Name1"}
    assert counter.rows == 2
