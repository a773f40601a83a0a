"""Shared fixtures: a data directory per test, runtimes, and URLs of the database servers
(tests/servers.py says where those are and how a missing one is reported)."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import DIALECTS_DATABASE, MYSQL_HOST, POSTGRESQL_HOST, mysql_admin, postgresql_admin

from sqladapter import runtime as runtimes
from sqladapter.seed import seed
from sqladapter.settings import Settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory, set as SQLADAPTER_DATA_DIR."""
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv("SQLADAPTER_DATA_DIR", str(directory))
    return directory


@pytest.fixture
def people_db(data_dir: Path) -> Path:
    """fake_people.db in the data directory, seeded with the tutorial's five people."""
    with runtimes.Runtime() as runtime:  # not the default one: the test may change the environment first
        seed("fake_people.db", runtime=runtime)
    return data_dir / "fake_people.db"


@pytest.fixture(autouse=True)
def _fresh_default_runtime(monkeypatch: pytest.MonkeyPatch):
    """Every test's run_query gets a default Runtime made from that test's environment."""
    monkeypatch.delenv("SQLADAPTER_DISABLE_PLUGINS", raising=False)
    runtimes.close_default()
    yield
    runtimes.close_default()


@pytest.fixture
def make_runtime():
    """make_runtime(settings): the test's Runtime for those settings (one per settings), closed after."""
    made: dict[Settings, runtimes.Runtime] = {}

    def make(settings: Settings) -> runtimes.Runtime:
        if settings not in made:
            made[settings] = runtimes.Runtime(settings)
        return made[settings]

    yield make
    for each in made.values():
        each.close()


@pytest.fixture
def runtime(data_dir: Path):
    """A Runtime of the test's own, on the test's data directory, closed after the test."""
    with runtimes.Runtime() as made:
        yield made


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """mysql+pymysql URL of the sqla_dialects database, as root without a password."""
    with mysql_admin() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DIALECTS_DATABASE} CHARACTER SET utf8mb4")
    return f"mysql+pymysql://root@{MYSQL_HOST}/{DIALECTS_DATABASE}"


@pytest.fixture(scope="session")
def postgresql_url() -> str:
    """postgresql+psycopg URL of the sqla_dialects database, as postgres (trust authentication)."""
    with postgresql_admin() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DIALECTS_DATABASE,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DIALECTS_DATABASE}")
    return f"postgresql+psycopg://postgres@{POSTGRESQL_HOST}/{DIALECTS_DATABASE}"


# -- end of database servers -------------------------------------------------------------------------
