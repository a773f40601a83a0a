"""Demo datasets and the only code that writes: `sqladapter seed`.

Seeding opens its own read-write engine through the dialect, never the read-only query path.
A table is loaded under a temporary name and swapped in within one transaction, so a seed that
is interrupted leaves the old table or the complete new one, never a half-filled table.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from . import connections
from .settings import Settings

# Installed wheels carry the fixtures inside the package; a source checkout keeps them at the top.
_HERE = Path(__file__).resolve().parent
FIXTURES = _HERE / "fixtures" if (_HERE / "fixtures").is_dir() else _HERE.parent / "fixtures"
DEFAULT_CONNECTION = "fake_people.db"
BATCH_ROWS = 10_000


def people_table(metadata: sa.MetaData, name: str = "people") -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("surname", sa.String(100), nullable=False),
        sa.Column("birth_date", sa.String(10), nullable=False),
        sa.Column("zip_code", sa.String(5), nullable=False),
    )


def tutorial_people() -> list[dict[str, str]]:
    """The five rows of the tutorial's people table, from fixtures/people.csv."""
    with open(FIXTURES / "people.csv", newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class SeedResult:
    table: str
    rows: int
    database: str
    seconds: float
    created: bool

    def summary(self) -> str:
        if not self.created:
            return f"{self.table}: already seeded in {self.database} ({self.rows} rows); --force recreates it"
        return f"{self.table}: {self.rows} rows into {self.database} in {self.seconds:.2f}s"


def seed(
    connection_string: str | None = None,
    connection: str | None = None,
    *,
    force: bool = False,
    settings: Settings | None = None,
) -> SeedResult:
    """Create and fill the people table unless it exists (or `force`)."""
    settings = settings or Settings.from_env()
    if connection_string is None and connection is None:
        connection_string = DEFAULT_CONNECTION
    target = connections.resolve(connection_string, connection, settings=settings, read_only=False)
    started = time.perf_counter()
    engine = target.engine
    table_name = "people"
    if sa.inspect(engine).has_table(table_name) and not force:
        with engine.connect() as conn:
            count = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table_name}")).scalar_one()
        return SeedResult(table_name, count, target.label, 0.0, created=False)
    rows = tutorial_people()
    _load_and_swap(engine, table_name, rows)
    return SeedResult(table_name, len(rows), target.label, time.perf_counter() - started, created=True)


def _load_and_swap(engine: sa.Engine, table_name: str, rows: Iterable[dict[str, Any]]) -> None:
    staging_name = f"{table_name}__loading"
    metadata = sa.MetaData()
    staging = people_table(metadata, staging_name)
    with engine.begin() as conn:
        staging.drop(conn, checkfirst=True)
        staging.create(conn)
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH_ROWS:
                conn.execute(staging.insert(), batch)
                batch = []
        if batch:
            conn.execute(staging.insert(), batch)
        preparer = engine.dialect.identifier_preparer
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {preparer.quote(table_name)}"))
        conn.execute(
            sa.text(f"ALTER TABLE {preparer.quote(staging_name)} RENAME TO {preparer.quote(table_name)}")
        )
