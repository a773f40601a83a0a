"""`sqladapter seed` on SQLite, DuckDB, MariaDB and PostgreSQL: same rows for the same seed,
idempotent, --force recreates, and a killed seed never leaves a half-filled table.

Server tests use only the database `sqla_seed` on each server, created here when missing.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from servers import MYSQL_HOST, POSTGRESQL_HOST, mysql_admin, postgresql_admin, server_unavailable

from sqladapter import UnknownDialectError, run_query
from sqladapter.cli import cli
from sqladapter.errors import ConnectionConfigError, InputError
from sqladapter.runtime import close_default, default
from sqladapter.seed import generate_orders, generate_people, seed, tutorial_people

SEED_TABLES = ("orders", "people", "orders__loading", "people__loading", "orders__replaced", "people__replaced")
TUTORIAL = [
    {"name": "John", "surname": "Doe", "birth_date": "1990-01-01", "zip_code": "12345"},
    {"name": "Jane", "surname": "Smith", "birth_date": "1985-05-15", "zip_code": "67890"},
    {"name": "Bob", "surname": "Johnson", "birth_date": "1992-03-20", "zip_code": "11111"},
    {"name": "Alice", "surname": "Williams", "birth_date": "1988-12-10", "zip_code": "22222"},
    {"name": "Charlie", "surname": "Brown", "birth_date": "1995-07-04", "zip_code": "33333"},
]


def _require_dialect(scheme: str, package: str) -> None:
    try:
        default().registry.for_backend(scheme)
    except UnknownDialectError:
        server_unavailable(f"the {scheme} dialect is not installed: pip install -e plugins/{package}")


def _mysql() -> str:
    _require_dialect("mysql", "sqladapter-mysql")
    with mysql_admin() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE DATABASE IF NOT EXISTS sqla_seed CHARACTER SET utf8mb4")
        cursor.execute("USE sqla_seed")
        for table in SEED_TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
    return f"mysql://root@{MYSQL_HOST}/sqla_seed"


def _postgresql() -> str:
    _require_dialect("postgresql", "sqladapter-postgresql")
    with postgresql_admin() as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = 'sqla_seed'").fetchone() is None:
            admin.execute("CREATE DATABASE sqla_seed")
    with postgresql_admin("sqla_seed") as conn:
        for table in SEED_TABLES:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    return f"postgresql://postgres@{POSTGRESQL_HOST}/sqla_seed"


def _duckdb() -> str:
    _require_dialect("duckdb", "sqladapter-duckdb")
    return "demo.duckdb"


@pytest.fixture(params=["sqlite", "duckdb", "mysql", "postgresql"])
def database(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """An empty database of each dialect, as the connection string a user would type."""
    if request.param in ("mysql", "postgresql"):
        request.applymarker(pytest.mark.servers)
    return {"sqlite": lambda: "demo.db", "duckdb": _duckdb, "mysql": _mysql, "postgresql": _postgresql}[request.param]()


def _rows(database: str, sql: str) -> list[dict]:
    return run_query(connection_string=database, query=sql, max_rows=10_000)["rows"]


def _count(database: str, table: str) -> int:
    return int(run_query(connection_string=database, query=f"SELECT COUNT(*) AS n FROM {table}", fetch="value")["value"])


def _expected_people(rows: int, random_seed: int) -> list[dict]:
    keys = ("name", "surname", "birth_date", "zip_code")
    return [dict(zip(keys, row)) for batch in generate_people(rows, random_seed) for row in batch]


def _expected_orders(rows: int, people: int, random_seed: int) -> list[tuple]:
    return [
        (order_id, person, ordered_at, Decimal(amount), status)
        for batch in generate_orders(rows, people, random_seed)
        for order_id, person, ordered_at, amount, status in batch
    ]


def _people(database: str) -> list[dict]:
    # People have no key, so compare as sorted lists; sorting in SQL would follow each
    # database's collation.
    rows = _rows(database, "SELECT name, surname, birth_date, zip_code FROM people")
    return sorted(rows, key=lambda r: tuple(r.values()))


def _orders(database: str) -> list[tuple]:
    rows = _rows(database, "SELECT id, person, ordered_at, amount, status FROM orders ORDER BY id")
    # SQLite has no decimal type: amounts come back as numbers there, as exact strings elsewhere.
    return [(r["id"], r["person"], r["ordered_at"], Decimal(str(r["amount"])), r["status"]) for r in rows]


# -- generation ----------------------------------------------------------------------------


def test_tutorial_fixture_is_the_five_tutorial_rows():
    assert tutorial_people() == TUTORIAL


def test_generated_people_are_the_same_for_the_same_seed_and_differ_for_another():
    first = _expected_people(2_000, 42)
    assert first == _expected_people(2_000, 42)
    assert first[5:] != _expected_people(2_000, 43)[5:]
    # The first N people do not depend on N.
    assert _expected_people(30, 42) == first[:30]


def test_generated_people_look_real():
    people = _expected_people(20_005, 3)
    assert people[:5] == TUTORIAL
    generated = people[5:]
    assert all(dt.date(1940, 1, 1) <= dt.date.fromisoformat(p["birth_date"]) <= dt.date(2008, 12, 31) for p in generated)
    assert all(len(p["zip_code"]) == 5 and p["zip_code"].isdigit() for p in generated)
    assert all(p["name"].isalpha() and p["name"][0].isupper() for p in generated)
    # Names follow real frequencies: many distinct, the common ones often.
    surnames = [p["surname"] for p in generated]
    assert len(set(surnames)) > 500
    assert surnames.count("Smith") > surnames.count("Zimmerman")


def test_orders_point_at_existing_people_and_carry_cents():
    orders = _expected_orders(5_000, 40, 9)
    assert [o[0] for o in orders] == list(range(1, 5_001))
    assert {o[1] for o in orders} <= set(range(1, 41))
    assert all(o[3] == o[3].quantize(Decimal("0.01")) and Decimal("5") <= o[3] < Decimal("1000") for o in orders)
    assert all(dt.datetime(2021, 1, 1) <= dt.datetime.fromisoformat(o[2]) < dt.datetime(2026, 1, 1) for o in orders)


# -- every dialect -------------------------------------------------------------------------


def test_seed_reads_back_the_generated_rows(database: str):
    results = seed(database, dataset="all", rows=700, random_seed=11)
    assert [(r.table, r.rows, r.created) for r in results] == [("people", 700, True), ("orders", 700, True)]
    assert _people(database) == sorted(_expected_people(700, 11), key=lambda r: tuple(r.values()))
    assert _orders(database) == _expected_orders(700, 700, 11)


def test_second_seed_leaves_the_table_as_it_is(database: str):
    seed(database, rows=40, random_seed=5)
    again = seed(database, rows=90, random_seed=6)
    assert [(r.table, r.rows, r.created) for r in again] == [("people", 40, False)]
    assert "already seeded" in again[0].summary() and "--force" in again[0].summary()
    assert _people(database) == sorted(_expected_people(40, 5), key=lambda r: tuple(r.values()))


def test_force_recreates_the_table(database: str):
    seed(database, dataset="all", rows=40, random_seed=5)
    results = seed(database, dataset="all", rows=25, random_seed=6, force=True)
    assert [(r.table, r.rows, r.created) for r in results] == [("people", 25, True), ("orders", 25, True)]
    assert _people(database) == sorted(_expected_people(25, 6), key=lambda r: tuple(r.values()))
    assert _orders(database) == _expected_orders(25, 25, 6)


def test_orders_alone_seeds_people_first(database: str):
    results = seed(database, dataset="orders", rows=12)
    assert [r.table for r in results] == ["people", "orders"]
    assert _count(database, "people") == 12 and _count(database, "orders") == 12


def test_default_seed_is_the_tutorial_people_table(database: str):
    seed(database)
    assert _rows(database, "SELECT * FROM people") == TUTORIAL


_KILLED_SEED = textwrap.dedent(
    """
    import sys, time
    from sqladapter.seed import seed

    def progress(table, done, total):
        # The first batch is in: stay here, mid-seed, until killed.
        print("loading", flush=True)
        time.sleep(600)

    seed(sys.argv[1], rows=200_000, random_seed=2, force=True, progress=progress)
    """
)


def test_killed_seed_leaves_the_old_table(database: str, data_dir: Path):
    seed(database)  # the old table: the tutorial's five people
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SEED, database],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SQLADAPTER_DATA_DIR": str(data_dir)},
    )
    try:
        line = child.stdout.readline()
        assert line == "loading\n", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _rows(database, "SELECT * FROM people") == TUTORIAL
    # What the killed run left behind does not stand in the way of the next one. (DuckDB
    # opens a file read-only or read-write per process, not both: close the query path first.)
    close_default()
    seed(database, rows=8, force=True)
    assert _count(database, "people") == 8


def test_killed_first_seed_leaves_no_table(data_dir: Path):
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SEED, "first.db"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SQLADAPTER_DATA_DIR": str(data_dir)},
    )
    try:
        assert child.stdout.readline() == "loading\n", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    output = run_query(connection_string="first.db", query="SELECT name FROM sqlite_master WHERE name = 'people'")
    assert output["rows"] == []


# -- the command ---------------------------------------------------------------------------


def test_cli_seeds_and_says_what_it_did(data_dir: Path):
    runner = CliRunner()
    first = runner.invoke(cli, ["seed", "shop.db", "--dataset", "all", "--rows", "30", "--random-seed", "3"])
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0].startswith(f"people: 30 rows into sqlite+pysqlite:///{data_dir / 'shop.db'} in ")
    assert lines[1].startswith("orders: 30 rows into ")
    second = runner.invoke(cli, ["seed", "shop.db", "--dataset", "all"])
    assert second.exit_code == 0
    assert [line.split(":")[0] for line in second.output.splitlines()] == ["people", "orders"]
    assert "already seeded" in second.output
    assert _count("shop.db", "orders") == 30


def test_cli_default_is_the_tutorial_database(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    result = CliRunner().invoke(cli, ["seed"])
    assert result.exit_code == 0, result.output
    assert (data_dir / "fake_people.db").exists()
    assert _rows("fake_people.db", "Select * from people") == TUTORIAL


def test_cli_seeds_a_named_connection(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SQLADAPTER_CONNECTION_DEMO", f"sqlite:///{data_dir / 'named.db'}")
    result = CliRunner().invoke(cli, ["seed", "@demo", "--rows", "9"])
    assert result.exit_code == 0, result.output
    assert _count("named.db", "people") == 9


def test_cli_refuses_a_password_in_the_url_without_showing_it(data_dir: Path):
    result = CliRunner().invoke(cli, ["seed", "postgresql://app:hunter2@127.0.0.1/sqla_seed"])
    assert result.exit_code == 2
    assert "hunter2" not in result.output
    assert "named connection" in result.output


def test_seed_refuses_bad_input(data_dir: Path):
    with pytest.raises(InputError, match="dataset"):
        seed("x.db", dataset="invoices")
    with pytest.raises(InputError, match="rows"):
        seed("x.db", rows=0)
    with pytest.raises(ConnectionConfigError, match="outside the data directory"):
        seed("../outside.db")


def test_unreachable_server_is_retryable_and_keeps_the_password_out(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    _require_dialect("postgresql", "sqladapter-postgresql")
    # Port 1 on this host: nothing listens there, the connection is refused at once.
    monkeypatch.setenv("SQLADAPTER_CONNECTION_GONE", "postgresql://app:hunter2@127.0.0.1:1/sqla_seed")
    result = CliRunner().invoke(cli, ["seed", "@gone"])
    assert result.exit_code == 3, result.output
    assert "database_unavailable, retryable" in result.output
    assert "hunter2" not in result.output


def test_progress_is_reported_per_batch_up_to_the_total(data_dir: Path):
    calls: list[tuple[str, int, int]] = []
    seed("progress.db", dataset="all", rows=25_000, progress=lambda *call: calls.append(call))
    people = [c for c in calls if c[0] == "people"]
    orders = [c for c in calls if c[0] == "orders"]
    assert people[-1] == ("people", 25_000, 25_000) and orders[-1] == ("orders", 25_000, 25_000)
    assert [c[1] for c in people] == sorted(c[1] for c in people) and len(people) > 2


def test_a_duckdb_file_queried_in_this_process_can_be_seeded_again(data_dir):
    """The query path's read-only engine must not keep the file from being reseeded."""
    pytest.importorskip("sqladapter_duckdb")
    from sqladapter import run_query
    from sqladapter.seed import seed as run_seed

    run_seed("people.duckdb")
    before = run_query(connection_string="people.duckdb", query="SELECT COUNT(*) AS n FROM people", fetch="value")
    run_seed("people.duckdb", rows=12, force=True)
    after = run_query(connection_string="people.duckdb", query="SELECT COUNT(*) AS n FROM people", fetch="value")
    assert (before["value"], after["value"]) == (5, 12)
