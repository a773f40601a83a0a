"""`make bench`: run_query against its baselines, every figure a ratio measured in the same run.

Baselines, per database:
  (a) tutorial  the tutorial worker's way: a new connection per call, fetch all, json.dumps
  (b) floor     the bare driver on a kept connection: execute, fetch, orjson.dumps

The subject is `orjson.dumps(run_query(task_input))`: what a worker must produce (JSON) from
a task input, through validation, the guard, the pool and the type contract. Results go to
stdout and benchmarks/results.md.

    .venv/bin/python -m benchmarks.run [--dialects sqlite,duckdb,mariadb,postgresql] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import orjson

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / ".data"
RESULTS = HERE / "results.md"
WIDE_ROWS = 100_000
# The zip code of one row in people_100k: a point lookup returns exactly that row.
ZIP = "04242"

os.environ["SQLADAPTER_DATA_DIR"] = str(DATA_DIR)
# The operator's cap must allow the wide result; the default max_rows (1000) is unchanged.
os.environ["SQLADAPTER_MAX_ROWS"] = str(WIDE_ROWS)
# ... and so must the output budget (100,000 rows are about 7 MB of JSON).
os.environ["SQLADAPTER_MAX_OUTPUT_BYTES"] = str(64 * 1024 * 1024)

from sqladapter import SqlAdapterError, run_query  # noqa: E402

from . import datasets  # noqa: E402
from .measure import Timings, interleave  # noqa: E402


@dataclass
class Backend:
    """One database as the benchmark reaches it: through run_query and through its bare driver."""

    name: str
    connection_string: str
    connect: Callable[[], Any]
    marker: str
    ensure: Callable[[], list[str]]
    #: Minimum speed-up over the tutorial's approach (None: the issue sets no goal).
    tutorial_goal: float | None
    server_version: Callable[[Any], str] = lambda conn: ""


def _sqlite_connect() -> Any:
    return sqlite3.connect(f"file:{DATA_DIR / 'bench.db'}?mode=ro", uri=True, check_same_thread=False)


def _duckdb_connect() -> Any:
    import duckdb
    import duckdb_engine
    import sqlalchemy
    from sqladapter_duckdb import READ_ONLY_CONFIG

    # One process may open a DuckDB file with one configuration only: the one the plugin's
    # engine opened it with (duckdb_engine adds its user agent).
    config = dict(READ_ONLY_CONFIG, custom_user_agent=f"duckdb_engine/{duckdb_engine.__version__}(sqlalchemy/{sqlalchemy.__version__})")
    return duckdb.connect(str(DATA_DIR / "bench.duckdb"), read_only=True, config=config)


def _mariadb_connect() -> Any:
    import pymysql

    return pymysql.connect(**datasets.MARIADB)


def _postgresql_connect() -> Any:
    import psycopg

    return psycopg.connect(datasets.POSTGRESQL, autocommit=True)


def _scalar(conn: Any, sql: str) -> str:
    cur = conn.cursor()
    cur.execute(sql)
    value = cur.fetchone()[0]
    cur.close()
    return str(value)


BACKENDS = {
    "sqlite": Backend(
        "sqlite", "bench.db", _sqlite_connect, "?", lambda: datasets.ensure_sqlite(DATA_DIR / "bench.db"), 5.0,
        lambda conn: "SQLite " + sqlite3.sqlite_version,
    ),
    "duckdb": Backend(
        "duckdb", "bench.duckdb", _duckdb_connect, "?", lambda: datasets.ensure_duckdb(DATA_DIR / "bench.duckdb"), None,
        lambda conn: "DuckDB " + _scalar(conn, "SELECT version()"),
    ),
    "mariadb": Backend(
        "mariadb", "mysql://root@127.0.0.1:3306/sqla_bench", _mariadb_connect, "%s", datasets.ensure_mariadb, 10.0,
        lambda conn: "MariaDB " + _scalar(conn, "SELECT VERSION()"),
    ),
    "postgresql": Backend(
        "postgresql", "postgresql://postgres@127.0.0.1:5432/sqla_bench", _postgresql_connect, "%s",
        datasets.ensure_postgresql, 10.0,
        lambda conn: "PostgreSQL " + _scalar(conn, "SHOW server_version"),
    ),
}


@dataclass
class Row:
    dialect: str
    scenario: str
    comparison: str
    subject_s: float | None
    baseline_s: float | None
    figure: str
    goal: str
    met: bool | None


# -- the three ways to run a query -------------------------------------------------------------


def tutorial(backend: Backend, sql: str, params: Any = None) -> Callable[[], Any]:
    def call() -> str:
        conn = backend.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql) if params is None else cur.execute(sql, params)
            rows = cur.fetchall()
        finally:
            conn.close()
        return json.dumps(rows)

    return call


def floor(conn: Any, sql: str, params: Any = None, limit: int = 1001) -> Callable[[], Any]:
    def call() -> bytes:
        cur = conn.cursor()
        cur.execute(sql) if params is None else cur.execute(sql, params)
        rows = cur.fetchmany(limit)
        cur.close()
        return orjson.dumps(rows)

    return call


def subject(task_input: dict[str, Any]) -> Callable[[], Any]:
    def call() -> bytes:
        return orjson.dumps(run_query(task_input))

    return call


# -- scenarios -----------------------------------------------------------------------------------


def bench_backend(backend: Backend, rounds: int, round_seconds: float) -> list[Row]:
    rows: list[Row] = []
    kept = backend.connect()
    base = {"connection_string": backend.connection_string}
    point_sql = f"SELECT * FROM people_100k WHERE zip_code = {backend.marker}"
    small_cases = {
        "small: 5 tutorial rows": ({**base, "query": "SELECT * FROM people"}, "SELECT * FROM people", None),
        "small: point lookup by zip, 100k rows": (
            {**base, "query": "SELECT * FROM people_100k WHERE zip_code = :zip", "parameters": {"zip": ZIP}},
            point_sql,
            (ZIP,),
        ),
    }
    for scenario, (task_input, sql, params) in small_cases.items():
        out = run_query(task_input)
        assert out["rowCount"] >= 1, (scenario, out)
        timings = interleave(
            {"subject": subject(task_input), "tutorial": tutorial(backend, sql, params), "floor": floor(kept, sql, params)},
            rounds=rounds,
            round_seconds=round_seconds,
        )
        speedup = 1 / timings.ratio("subject", "tutorial")
        goal = backend.tutorial_goal
        rows.append(
            Row(backend.name, scenario, "(a) tutorial / subject", timings.median("subject"), timings.median("tutorial"),
                f"{speedup:.1f}x faster", f">= {goal:.0f}x" if goal else "(none set)",
                None if goal is None else speedup >= goal)
        )
        rows.append(_vs_floor(backend.name, scenario, timings, 2.0))

    wide_input = {**base, "query": "SELECT * FROM people_100k", "max_rows": WIDE_ROWS}
    out = run_query(wide_input)
    assert out["rowCount"] == WIDE_ROWS and not out["truncated"], out["rowCount"]
    timings = interleave(
        {"subject": subject(wide_input), "floor": floor(kept, "SELECT * FROM people_100k", limit=WIDE_ROWS + 1)},
        rounds=max(3, rounds // 2),
        round_seconds=round_seconds,
    )
    rows.append(_vs_floor(backend.name, f"wide: {WIDE_ROWS:,} rows", timings, 1.5))

    bounded_input = {**base, "query": "SELECT * FROM people_1m"}
    out = run_query(bounded_input)
    assert out["rowCount"] == 1000 and out["truncated"], out["rowCount"]
    # The same rows as arrays, for the analysis: what building one object per row costs.
    arrays_input = {**bounded_input, "shape": "arrays"}
    timings = interleave(
        {
            "subject": subject(bounded_input),
            "arrays": subject(arrays_input),
            "floor": floor(kept, "SELECT * FROM people_1m LIMIT 1001"),
        },
        rounds=rounds,
        round_seconds=round_seconds,
    )
    rows.append(_vs_floor(backend.name, "bounded: SELECT * on 1M rows, max_rows 1000", timings, 1.2,
                          baseline="floor: bare driver, LIMIT 1001"))
    ratio = timings.ratio("arrays", "floor")
    rows.append(Row(backend.name, "bounded: SELECT * on 1M rows, max_rows 1000", "shape arrays / the same floor",
                    timings.median("arrays"), timings.median("floor"), f"{ratio:.2f}x", "(for the analysis)", None))
    probe = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", backend.connection_string, backend.name],
        capture_output=True, text=True, cwd=HERE.parent, check=True,
    )
    memory = json.loads(probe.stdout.strip().splitlines()[-1])
    growth = memory["bounded_mb"]
    rows.append(Row(backend.name, "bounded: SELECT * on 1M rows, max_rows 1000",
                    "peak RSS growth, fresh process (control: fetch all " f"{memory['fetch_all_mb']:.0f} MB)",
                    None, None, f"{growth:.1f} MB", "< 20 MB", growth < 20))
    kept.close()
    return rows


def _vs_floor(dialect: str, scenario: str, timings: Timings, goal: float, baseline: str = "(b) floor") -> Row:
    ratio = timings.ratio("subject", "floor")
    return Row(dialect, scenario, f"subject / {baseline}", timings.median("subject"), timings.median("floor"),
               f"{ratio:.2f}x", f"<= {goal}x", ratio <= goal)


# -- report ----------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        memory_gb = int(memory.split()[1]) / 1024 / 1024
    except (OSError, StopIteration):
        memory_gb = 0
    return [
        f"- Machine: {platform.node()}, {cpu}, {os.cpu_count()} cores, {memory_gb:.1f} GB RAM, {platform.platform()}",
        f"- Python {platform.python_version()}; sqladapter {_version('sqladapter')}, SQLAlchemy {_version('SQLAlchemy')}, "
        f"sqlglot {_version('sqlglot')}, orjson {_version('orjson')}, conductor-python {_version('conductor-python')}",
        f"- Drivers: sqlite3 (SQLite {sqlite3.sqlite_version}), duckdb {_version('duckdb')}, "
        f"duckdb_engine {_version('duckdb_engine')}, PyMySQL {_version('PyMySQL')}, psycopg {_version('psycopg')}",
    ]


def _us(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| dialect | scenario | comparison | subject | baseline | figure | goal | met |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        lines.append(f"| {r.dialect} | {r.scenario} | {r.comparison} | {_us(r.subject_s)} | {_us(r.baseline_s)} | "
                     f"{r.figure} | {r.goal} | {met} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialects", default="sqlite,duckdb,mariadb,postgresql")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run, not a result)")
    parser.add_argument("--sdk", default="auto", choices=("auto", "yes", "no"),
                        help="the through-the-SDK benchmark (auto: when the worker and test server exist)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds, round_seconds = (3, 0.02) if args.quick else (9, 0.08)
    DATA_DIR.mkdir(exist_ok=True)
    started = time.time()
    load_before = os.getloadavg()
    rows: list[Row] = []
    servers: list[str] = []
    skipped: list[str] = []
    for name in args.dialects.split(","):
        backend = BACKENDS[name]
        try:
            made = backend.ensure()
            conn = backend.connect()
            servers.append(backend.server_version(conn))
            conn.close()
            run_query(connection_string=backend.connection_string, query="SELECT 1 AS one")
        except SqlAdapterError as exc:
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # a server that is not running
            skipped.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        if made:
            print(f"{name}: made {', '.join(made)}", file=sys.stderr)
        print(f"{name}: measuring", file=sys.stderr)
        rows.extend(bench_backend(backend, rounds, round_seconds))
        print("\n".join(table([r for r in rows if r.dialect == name])[2:]), file=sys.stderr)
    if args.sdk != "no":
        from . import sdk_throughput

        sdk_rows, sdk_skip = sdk_throughput.bench(required=args.sdk == "yes", quick=args.quick)
        rows.extend(Row(**r) for r in sdk_rows)
        skipped.extend(sdk_skip)
    load_after = os.getloadavg()
    report = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"in {time.time() - started:.0f} s{' (--quick: a smoke run, not a result)' if args.quick else ''}.",
        "",
        *machine(),
        f"- Servers: {', '.join(s for s in servers if s) or '-'}",
        f"- Load average (1 min) at start {load_before[0]:.2f}, at end {load_after[0]:.2f}: "
        "other work shares these cores, so only ratios are reported as results",
        "",
        "Every ratio is the median over interleaved rounds (baseline and subject alternating, order rotating) "
        "of subject time / baseline time in the same round; the time columns are medians per call, for scale only.",
        "Subject: `orjson.dumps(run_query(input))`. (a) tutorial: new connection per call, `fetchall`, "
        "`json.dumps`. (b) floor: bare driver, kept connection, `fetchmany(max_rows + 1)`, `orjson.dumps`.",
        "",
        *table(rows),
    ]
    if skipped:
        report += ["", "Not measured:", *[f"- {s}" for s in skipped]]
    text = "\n".join(report) + "\n"
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
