"""`sqladapter seed` of a million people into SQLite and DuckDB, against the bare driver.

Both sides include generating the rows with `sqladapter.seed.generate_people` (timed alone
too, for reference), so the ratio is what seeding adds on top of the driver's own bulk path:
the staging table, the swap, the engine. Every call on either side writes a new database
file (the previous one is deleted first), so both load into the same empty state. Baselines:

    sqlite   sqlite3 executemany of all rows in one transaction
    duckdb   csv.writer to a temporary file, then COPY (the fastest bare path without pyarrow
             or pandas; executemany inserts about 2,000 rows a second, eight minutes a million)

Variants run in alternating rounds (benchmarks/measure.py); a ratio is the median of the
per-round ratios. Run: python -m benchmarks.seed_people [--rows N] [--rounds R]
"""

from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from sqladapter import Settings
from sqladapter.seed import generate_people, seed

from .measure import interleave

COLUMNS = "name, surname, birth_date, zip_code"
TARGET_RATIO = 1.5


def _generate(rows: int) -> int:
    return sum(len(batch) for batch in generate_people(rows, 1))


def _remove(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", ".wal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _sqlite_driver(path: Path, rows: int) -> Callable[[], Any]:
    def call() -> None:
        _remove(path)
        conn = sqlite3.connect(path)
        try:
            conn.execute(
                "CREATE TABLE people (name VARCHAR(100) NOT NULL, surname VARCHAR(100) NOT NULL, "
                "birth_date VARCHAR(10) NOT NULL, zip_code VARCHAR(5) NOT NULL)"
            )
            for batch in generate_people(rows, 1):
                conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?)", batch)
            conn.commit()
        finally:
            conn.close()

    return call


def _duckdb_driver(path: Path, rows: int) -> Callable[[], Any]:
    import duckdb

    def call() -> None:
        _remove(path)
        conn = duckdb.connect(str(path))
        try:
            conn.execute(
                "CREATE TABLE people (name VARCHAR NOT NULL, surname VARCHAR NOT NULL, "
                "birth_date DATE NOT NULL, zip_code VARCHAR NOT NULL)"
            )
            with tempfile.TemporaryDirectory() as directory:
                csv_path = os.path.join(directory, "rows.csv")
                with open(csv_path, "w", newline="", encoding="utf-8") as f:
                    writer = csv.writer(f)
                    for batch in generate_people(rows, 1):
                        writer.writerows(batch)
                conn.execute(f"COPY people FROM '{csv_path}' (FORMAT csv, HEADER false)")
        finally:
            conn.close()

    return call


def _seed(database: str, rows: int, settings: Settings) -> Callable[[], Any]:
    def call() -> None:
        _remove(settings.data_dir / database)
        with Runtime(settings) as runtime:
            (result,) = seed(database, rows=rows, random_seed=1, force=True, runtime=runtime)
        assert result.rows == rows

    return call


def run(rows: int, rounds: int) -> list[dict[str, Any]]:
    """Measure each dialect; one dict per dialect with seconds and the ratio."""
    results = []
    with tempfile.TemporaryDirectory(prefix="sqladapter-bench-seed-") as directory:
        data_dir = Path(directory)
        settings = Settings(data_dir=data_dir)
        started = time.perf_counter()
        _generate(rows)
        generation = time.perf_counter() - started
        cases = [("sqlite", "seeded.db", _sqlite_driver(data_dir / "driver.db", rows))]
        try:
            cases.append(("duckdb", "seeded.duckdb", _duckdb_driver(data_dir / "driver.duckdb", rows)))
        except ImportError:
            print("duckdb is not installed: skipping it", file=sys.stderr)
        for dialect, database, driver in cases:
            timings = interleave(
                {"seed": _seed(database, rows, settings), "driver": driver}, rounds=rounds, round_seconds=0
            )
            results.append(
                {
                    "dialect": dialect,
                    "rows": rows,
                    "generation_s": generation,
                    "seed_s": timings.median("seed"),
                    "driver_s": timings.median("driver"),
                    "ratio": timings.ratio("seed", "driver"),
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = run(args.rows, args.rounds)
    print(f"generating {args.rows:,} people alone: {results[0]['generation_s']:.2f}s (included in both sides below)")
    print(f"{'dialect':8} {'seed s':>8} {'driver s':>9} {'ratio':>6}  (aim <= {TARGET_RATIO})")
    for r in results:
        print(f"{r['dialect']:8} {r['seed_s']:8.2f} {r['driver_s']:9.2f} {r['ratio']:6.2f}")
    return 0 if all(r["ratio"] <= TARGET_RATIO for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
