"""An `execute_sql` batch through `parameter_sets` against the plain driver's executemany.

Each call, on either side, empties a table and inserts the same 10,000 rows in one
transaction. The subject is `Runtime.execute` with the DELETE and the INSERT as one list of
statements, the INSERT's rows as `parameter_sets` (objects, :name placeholders), and an
idempotency key, so the ledger record is in it too: what a workflow task costs. The baseline
is the driver on a kept connection: DELETE, `executemany` of tuples, commit. DuckDB's
connection is opened per call on both sides, since its write path closes the file after
each write. Variants run in alternating rounds (benchmarks/measure.py); a ratio is the median
of the per-round ratios, and the target is at most 1.5x.

Run: python -m benchmarks.write_batch [--rows N] [--rounds R] [--dialect NAME ...]
MariaDB and PostgreSQL use the database `sqla_writes` on the test servers (tests/servers.py).
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

from sqladapter import Runtime, ledger

from .measure import interleave

TARGET_RATIO = 1.5
TABLE = "bench_batch"
DATABASE = "sqla_writes"
MYSQL = ("127.0.0.1", 3306)
POSTGRESQL = ("127.0.0.1", 5432)


def _rows(count: int) -> list[tuple[int, str, int]]:
    return [(i, f"item-{i}", i % 97) for i in range(count)]


def _driver(dialect: str, directory: Path) -> tuple[str, Callable[[], Any]]:
    """The connection URL for sqladapter, and a function opening a plain driver connection."""
    if dialect == "sqlite":
        path = directory / "batch.db"
        return f"sqlite:///{path}", lambda: sqlite3.connect(path)
    if dialect == "duckdb":
        import duckdb

        path = directory / "batch.duckdb"
        return f"duckdb:///{path}", lambda: duckdb.connect(str(path))
    if dialect == "mysql":
        import pymysql

        admin = pymysql.connect(host=MYSQL[0], port=MYSQL[1], user="root", autocommit=True)
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        admin.close()
        return (f"mysql://root@{MYSQL[0]}:{MYSQL[1]}/{DATABASE}",
                lambda: pymysql.connect(host=MYSQL[0], port=MYSQL[1], user="root", database=DATABASE))
    import psycopg

    admin = psycopg.connect(host=POSTGRESQL[0], port=POSTGRESQL[1], user="postgres", dbname="postgres", autocommit=True)
    if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
        admin.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    return (f"postgresql://postgres@{POSTGRESQL[0]}:{POSTGRESQL[1]}/{DATABASE}",
            lambda: psycopg.connect(host=POSTGRESQL[0], port=POSTGRESQL[1], user="postgres", dbname=DATABASE))


def measure(dialect: str, rows: int, rounds: int, directory: Path) -> tuple[float, float, float]:
    """(sqladapter seconds, driver seconds, ratio) for one batch of `rows` rows."""
    url, connect = _driver(dialect, directory)
    mark = "?" if dialect in ("sqlite", "duckdb") else "%s"
    setup = connect()
    cursor = setup.cursor()
    cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
    cursor.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INTEGER NOT NULL)")
    setup.commit()
    setup.close()
    data = _rows(rows)
    sets = [{"id": i, "name": name, "qty": qty} for i, name, qty in data]
    insert = f"INSERT INTO {TABLE} (id, name, qty) VALUES ({mark}, {mark}, {mark})"
    per_call = dialect == "duckdb"
    kept = None if per_call else connect()

    def driver() -> None:
        connection = connect() if per_call else kept
        cursor = connection.cursor()
        cursor.execute(f"DELETE FROM {TABLE}")
        cursor.executemany(insert, data)
        connection.commit()
        cursor.close()
        if per_call:
            connection.close()

    environ = {"SQLADAPTER_CONNECTION_BENCH": url, "SQLADAPTER_CONNECTION_BENCH_WRITABLE": "1",
               "SQLADAPTER_DATA_DIR": str(directory), "SQLADAPTER_MAX_PARAMETER_SETS": str(max(rows, 1))}
    runtime = Runtime(environ=environ)
    ledger.init(runtime, "bench")
    counter = itertools.count()
    task = {
        "connection": "bench",
        "statements": [
            f"DELETE FROM {TABLE}",
            {"statement": f"INSERT INTO {TABLE} (id, name, qty) VALUES (:id, :name, :qty)", "parameter_sets": sets,
             "expected_rows": rows},
        ],
        "timeout_ms": 300_000,
    }
    run_id = uuid.uuid4().hex[:8]

    def subject() -> None:
        runtime.execute(task, idempotency_key=f"bench-{run_id}-{next(counter)}")

    try:
        timings = interleave({"driver": driver, "sqladapter": subject}, rounds=rounds, round_seconds=1.0)
    finally:
        runtime.close()
        if kept is not None:
            kept.close()
    return timings.median("sqladapter"), timings.median("driver"), timings.ratio("sqladapter", "driver")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dialect", action="append", choices=["sqlite", "duckdb", "mysql", "postgresql"])
    args = parser.parse_args(argv)
    dialects = args.dialect or ["sqlite", "duckdb", "mysql", "postgresql"]
    worst = 0.0
    print(f"| dialect | rows | sqladapter | executemany | ratio (target <= {TARGET_RATIO}) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sqladapter-bench-") as directory:
        for dialect in dialects:
            try:
                ours, theirs, ratio = measure(dialect, args.rows, args.rounds, Path(directory))
            except Exception as exc:  # a server that does not answer: say so, go on
                print(f"| {dialect} | {args.rows} | not measured: {type(exc).__name__}: {str(exc)[:80]} | | |")
                continue
            worst = max(worst, ratio)
            print(f"| {dialect} | {args.rows} | {ours * 1000:.1f} ms | {theirs * 1000:.1f} ms | {ratio:.2f}x |", flush=True)
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
