"""Demo datasets and the only code that writes: `sqladapter seed`.

Seeding opens its own read-write engine through the dialect, never the read-only query path.
Each table is loaded under a staging name and swapped in by the dialect (`BulkLoader.replace_table`),
so a seed that is interrupted leaves the old table or the complete new one, never a half-filled
table. Rows are generated the same way whatever the dialect, so one `random_seed` gives the same
rows in SQLite, DuckDB, MySQL and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import operator
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa

from .errors import InputError, SqlAdapterError, redact
from .query import classify
from .runtime import Runtime, default

if TYPE_CHECKING:
    from .connections import Source

# Installed wheels carry the fixtures inside the package; a source checkout keeps them at the top.
_HERE = Path(__file__).resolve().parent
FIXTURES = _HERE / "fixtures" if (_HERE / "fixtures").is_dir() else _HERE.parent / "fixtures"
DEFAULT_CONNECTION = "fake_people.db"
DATASETS = ("people", "orders")
#: Rows per table when --rows is not given: the tutorial's five people, and a few orders for them.
DEFAULT_ROWS = MappingProxyType({"people": 5, "orders": 20})
DEFAULT_RANDOM_SEED = 1
#: Rows generated and loaded per batch. Generated rows depend on it: changing it changes the data.
CHUNK_ROWS = 10_000
STAGING_SUFFIX = "__loading"

BIRTH_DATES = (dt.date(1940, 1, 1), dt.date(2008, 12, 31))
ORDER_DAYS = (dt.date(2021, 1, 1), dt.date(2025, 12, 31))
ORDER_STATUSES = MappingProxyType({"delivered": 55, "shipped": 15, "paid": 12, "placed": 10, "cancelled": 5, "returned": 3})

#: Called after each loaded batch with (table, rows loaded so far, rows in total).
Progress = Callable[[str, int, int], None]
Batch = Sequence[Sequence[Any]]


def people_table(metadata: sa.MetaData, name: str = "people") -> sa.Table:
    """The people table; on SQLite every column is text, as in the tutorial's fake_people.db."""
    return sa.Table(
        name,
        metadata,
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("surname", sa.String(100), nullable=False),
        sa.Column("birth_date", sa.Date().with_variant(sa.String(10), "sqlite"), nullable=False),
        sa.Column("zip_code", sa.String(5), nullable=False),
    )


def orders_table(metadata: sa.MetaData, name: str = "orders") -> sa.Table:
    """The orders table; `person` is the 1-based number of a row in people, in seeding order."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("person", sa.Integer, nullable=False),
        sa.Column("ordered_at", sa.DateTime().with_variant(sa.TIMESTAMP(), "sqlite"), nullable=False),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
    )


TABLES: Mapping[str, Callable[[sa.MetaData, str], sa.Table]] = MappingProxyType({"people": people_table, "orders": orders_table})


def tutorial_people() -> list[dict[str, str]]:
    """The five rows of the tutorial's people table, from fixtures/people.csv."""
    with open(FIXTURES / "people.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- generation: plain Python, no database, the same rows for the same seed everywhere ------------


@functools.cache
def _name_pools() -> tuple[list[str], list[str]]:
    # Faker's own en_US name lists and frequencies, drawn from with a seeded random.Random: the
    # same realistic names as Faker's first_name()/last_name(), over a hundred times faster
    # (Faker's per-call overhead makes a million people take two minutes). Each name appears in
    # its pool in proportion to its frequency, so a draw is a uniform pick, not a weighted one.
    from faker.providers.person.en_US import Provider

    return _by_frequency(Provider.first_names), _by_frequency(Provider.last_names)


def _by_frequency(weights: Mapping[str, float], size: int = 200_000) -> list[str]:
    total = sum(weights.values())
    return [name for name, weight in weights.items() for _ in range(max(1, round(weight / total * size)))]


@functools.cache
def _birth_dates() -> list[str]:
    start, end = (d.toordinal() for d in BIRTH_DATES)
    return [dt.date.fromordinal(day).isoformat() for day in range(start, end + 1)]


@functools.cache
def _zip_codes() -> list[str]:
    # The range Faker's en_US postcode() draws from.
    return [f"{code:05d}" for code in range(501, 99951)]


def _chunks(count: int, random_seed: int, dataset: str, make: Callable[[random.Random, int, int], Batch]) -> Iterator[Batch]:
    # Every chunk is generated whole from its own seeded Random, then cut: the first N rows are
    # the same whatever N, and no chunk depends on how the others were consumed.
    for index in range((count + CHUNK_ROWS - 1) // CHUNK_ROWS):
        rng = random.Random(f"sqladapter/{dataset}/{random_seed}/{index}")
        rows = make(rng, CHUNK_ROWS, index * CHUNK_ROWS)
        yield rows[: min(CHUNK_ROWS, count - index * CHUNK_ROWS)]


def _make_people(rng: random.Random, n: int, _first: int) -> list[tuple[str, str, str, str]]:
    first, last = _name_pools()
    return list(
        zip(
            rng.choices(first, k=n),
            rng.choices(last, k=n),
            rng.choices(_birth_dates(), k=n),
            rng.choices(_zip_codes(), k=n),
        )
    )


def generate_people(rows: int, random_seed: int = DEFAULT_RANDOM_SEED) -> Iterator[Batch]:
    """People in batches: the tutorial's five first, then generated ones (same seed, same rows)."""
    tutorial = [(p["name"], p["surname"], p["birth_date"], p["zip_code"]) for p in tutorial_people()]
    head = tutorial[:rows]
    if head:
        yield head
    yield from _chunks(rows - len(head), random_seed, "people", _make_people)


def generate_orders(rows: int, people: int, random_seed: int = DEFAULT_RANDOM_SEED) -> Iterator[Batch]:
    """Orders in batches, each for one of `people` people (numbered from 1), ids from 1."""
    if people < 1:
        raise InputError("orders need people: seed the people dataset first (sqladapter seed --dataset people)")
    persons = range(1, people + 1)
    days, clock, amounts, statuses = _order_pools()

    def make(rng: random.Random, n: int, first: int) -> list[tuple[Any, ...]]:
        # A uniform day and a uniform second of the day: a uniform second over the years.
        ordered_at = map(operator.add, rng.choices(days, k=n), rng.choices(clock, k=n))
        ids = range(first + 1, first + n + 1)
        return list(zip(ids, rng.choices(persons, k=n), ordered_at, rng.choices(amounts, k=n), rng.choices(statuses, k=n)))

    yield from _chunks(rows, random_seed, "orders", make)


@functools.cache
def _order_pools() -> tuple[list[str], list[str], list[str], list[str]]:
    start, end = (d.toordinal() for d in ORDER_DAYS)
    # ISO 8601 with "T": the form the query path gives every database's timestamps, so SQLite,
    # which keeps them as text, reads back the same.
    days = [dt.date.fromordinal(day).isoformat() + "T" for day in range(start, end + 1)]
    clock = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    amounts = [f"{cents // 100}.{cents % 100:02d}" for cents in range(500, 100_000)]
    return days, clock, amounts, _by_frequency(ORDER_STATUSES, 100)


# -- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedResult:
    """What one table's seeding did."""

    table: str
    rows: int
    database: str
    seconds: float
    created: bool

    def summary(self) -> str:
        """The one line the CLI prints."""
        if not self.created:
            return f"{self.table}: already seeded in {self.database} ({self.rows} rows), left as it is; --force recreates it"
        return f"{self.table}: {self.rows} rows into {self.database} in {self.seconds:.2f}s"


def seed(
    connection_string: str | None = None,
    connection: str | None = None,
    *,
    dataset: str = "people",
    rows: int | None = None,
    random_seed: int = DEFAULT_RANDOM_SEED,
    force: bool = False,
    runtime: Runtime | None = None,
    progress: Progress | None = None,
) -> list[SeedResult]:
    """Create and fill the dataset's tables unless they exist (or `force`); one result per table.

    `dataset` is "people", "orders" (seeds people first if missing) or "all". `rows` is the row
    count of each table (default: five people, twenty orders).
    """
    if dataset not in (*DATASETS, "all"):
        raise InputError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)} or all")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise InputError(f"rows must be a positive integer, got {rows!r}")
    runtime = runtime or default()
    if connection_string is None and connection is None:
        connection_string = DEFAULT_CONNECTION
    target = runtime.resolve(connection_string, connection, read_only=False)
    if target.dialect.extensions:
        # An embedded database file may be open read-only by this runtime's query engines, and
        # DuckDB refuses a second opening of one file with another configuration: close them.
        runtime.pools.close_file_engines()
    try:
        results = []
        with target.engine.connect() as conn:
            if dataset in ("people", "all") or not _exists(conn, "people"):
                results.append(_seed_table(target, conn, "people", rows, random_seed, force, progress))
            if dataset in ("orders", "all"):
                results.append(_seed_table(target, conn, "orders", rows, random_seed, force, progress))
        return results
    except SqlAdapterError as exc:
        exc.message = redact(exc.message, target.secrets)
        exc.args = (exc.message,)
        raise
    except Exception as exc:
        raise classify(target, getattr(exc, "orig", None) or exc) from None
    finally:
        # Write connections are not kept: an embedded database (DuckDB) allows one writer
        # process, and the query path opens the file again read-only.
        target.engine.dispose()


def _exists(conn: sa.Connection, table: str) -> bool:
    return sa.inspect(conn).has_table(table)


def _count(conn: sa.Connection, table: str) -> int:
    quoted = conn.dialect.identifier_preparer.quote(table)
    return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {quoted}").scalar_one())


def _seed_table(
    target: Source,
    conn: sa.Connection,
    table: str,
    rows: int | None,
    random_seed: int,
    force: bool,
    progress: Progress | None,
) -> SeedResult:
    if _exists(conn, table) and not force:
        return SeedResult(table, _count(conn, table), target.label, 0.0, created=False)
    started = time.perf_counter()
    total = rows if rows is not None else DEFAULT_ROWS[table]
    if table == "people":
        batches = generate_people(total, random_seed)
    else:
        batches = generate_orders(total, _count(conn, "people"), random_seed)
    loaded = _load_and_swap(target, conn, table, _reporting(batches, table, total, progress))
    return SeedResult(table, loaded, target.label, time.perf_counter() - started, created=True)


def _reporting(batches: Iterable[Batch], table: str, total: int, progress: Progress | None) -> Iterator[Batch]:
    done = 0
    for batch in batches:
        yield batch
        # Reached when the loader asks for the next batch: this one is in.
        done += len(batch)
        if progress is not None:
            progress(table, done, total)


def _load_and_swap(target: Source, conn: sa.Connection, table: str, batches: Iterable[Batch]) -> int:
    staging = TABLES[table](sa.MetaData(), table + STAGING_SUFFIX)
    quote = conn.dialect.identifier_preparer.quote
    # A seed killed where DDL is not transactional (MySQL) leaves a staging table behind.
    conn.execute(sa.schema.DropTable(staging, if_exists=True))
    conn.commit()
    # Python's sqlite3 begins a transaction only at the first INSERT, so on SQLite the staging
    # table's CREATE commits alone; the rows and the swap still commit together.
    with conn.begin():
        staging.create(conn)
        loaded = target.dialect.bulk_loader.bulk_insert(
            target.dialect,
            conn.connection.dbapi_connection,
            quote(staging.name),
            [quote(column.name) for column in staging.columns],
            batches,
        )
        target.dialect.bulk_loader.replace_table(conn, staging.name, table)
    return loaded
