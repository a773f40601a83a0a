"""The benchmark tables, made once per database and kept between runs.

    people        the tutorial's five rows
    people_100k   100,000 rows, every zip_code distinct and indexed (the point lookup)
    people_1m     1,000,000 rows (the bounded-memory query)

Rows are generated inside each database (recursive CTE, range(), generate_series, the
sequence engine), so making a million of them takes seconds, not minutes. The bare drivers
do the writing: the query path under test is read-only by design.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable

from sqladapter.seed import tutorial_people

COLUMNS = ("name", "surname", "birth_date", "zip_code")
SIZES = {"people_100k": 100_000, "people_1m": 1_000_000}

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "sqla_bench"}
POSTGRESQL = "host=127.0.0.1 port=5432 user=postgres dbname=sqla_bench"


def _rows_sql(dialect: str, table: str, count: int) -> str:
    """INSERT ... SELECT generating `count` rows, zip codes cycling every 100,000 rows."""
    if dialect == "sqlite":
        return (
            f"INSERT INTO {table} WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {count - 1}) "
            "SELECT 'Name' || (i % 997), 'Surname' || (i % 1009), "
            "printf('%04d-%02d-%02d', 1940 + i % 70, 1 + i % 12, 1 + i % 28), printf('%05d', i % 100000) FROM n"
        )
    if dialect == "duckdb":
        return (
            f"INSERT INTO {table} SELECT 'Name' || (i % 997), 'Surname' || (i % 1009), "
            "printf('%04d-%02d-%02d', 1940 + i % 70, 1 + i % 12, 1 + i % 28), printf('%05d', i % 100000) "
            f"FROM range({count}) AS t(i)"
        )
    if dialect == "postgresql":
        return (
            f"INSERT INTO {table} SELECT 'Name' || (i % 997), 'Surname' || (i % 1009), "
            "(1940 + i % 70) || '-' || lpad((1 + i % 12)::text, 2, '0') || '-' || lpad((1 + i % 28)::text, 2, '0'), "
            f"lpad((i % 100000)::text, 5, '0') FROM generate_series(0, {count - 1}) AS i"
        )
    if dialect == "mariadb":
        return (
            f"INSERT INTO {table} SELECT CONCAT('Name', seq % 997), CONCAT('Surname', seq % 1009), "
            "CONCAT(1940 + seq % 70, '-', LPAD(1 + seq % 12, 2, '0'), '-', LPAD(1 + seq % 28, 2, '0')), "
            f"LPAD(seq % 100000, 5, '0') FROM seq_0_to_{count - 1}"
        )
    raise ValueError(dialect)


def _create_sql(dialect: str, table: str) -> str:
    text = "VARCHAR(100)" if dialect in ("mariadb", "postgresql") else "TEXT"
    columns = ", ".join(f"{c} {text} NOT NULL" for c in COLUMNS)
    suffix = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" if dialect == "mariadb" else ""
    return f"CREATE TABLE {table} ({columns}){suffix}"


def _ensure(dialect: str, conn: Any, commit: Callable[[], None]) -> list[str]:
    """Create whichever table is missing or has the wrong row count; return what was made."""
    made = []
    cur = conn.cursor()
    wanted = {"people": 5, **SIZES}
    for table, count in wanted.items():
        try:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            if cur.fetchone()[0] == count:
                continue
        except Exception:
            if dialect == "postgresql":
                conn.rollback()
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(_create_sql(dialect, table))
        if table == "people":
            marker = "%s" if dialect in ("mariadb", "postgresql") else "?"
            cur.executemany(
                f"INSERT INTO {table} VALUES ({', '.join([marker] * 4)})",
                [tuple(row[c] for c in COLUMNS) for row in tutorial_people()],
            )
        else:
            cur.execute(_rows_sql(dialect, table, count))
            if table == "people_100k":
                cur.execute(f"CREATE INDEX {table}_zip ON {table} (zip_code)")
        commit()
        made.append(table)
    if dialect == "postgresql" and made:
        cur.execute("ANALYZE")
        commit()
    cur.close()
    return made


def ensure_sqlite(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return _ensure("sqlite", conn, conn.commit)
    finally:
        conn.close()


def ensure_duckdb(path: Path) -> list[str]:
    import duckdb

    conn = duckdb.connect(str(path))
    try:
        return _ensure("duckdb", conn, lambda: None)
    finally:
        conn.close()


def ensure_mariadb() -> list[str]:
    import pymysql

    server = pymysql.connect(**{k: v for k, v in MARIADB.items() if k != "database"})
    with server.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {MARIADB['database']} CHARACTER SET utf8mb4")
    server.close()
    conn = pymysql.connect(**MARIADB)
    try:
        return _ensure("mariadb", conn, conn.commit)
    finally:
        conn.close()


def ensure_postgresql() -> list[str]:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as server:
        if server.execute("SELECT 1 FROM pg_database WHERE datname = 'sqla_bench'").fetchone() is None:
            server.execute("CREATE DATABASE sqla_bench")
    conn = psycopg.connect(POSTGRESQL)
    try:
        return _ensure("postgresql", conn, conn.commit)
    finally:
        conn.close()
