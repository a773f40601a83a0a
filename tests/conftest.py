"""Shared fixtures: a data directory per test, fresh plugin state, and the database servers.

MariaDB and PostgreSQL tests run against real servers (127.0.0.1:3306 root, 127.0.0.1:5432
trust). Where a server does not answer they skip with a one-line reason, unless
SQLADAPTER_REQUIRE_SERVERS=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sqladapter import runtime as runtimes
from sqladapter.seed import seed
from sqladapter.settings import Settings

REQUIRE_SERVERS = os.environ.get("SQLADAPTER_REQUIRE_SERVERS") == "1"


def server_unavailable(reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI) a test whose server does not answer."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (SQLADAPTER_REQUIRE_SERVERS=1 turns this skip into a failure)")
    pytest.skip(reason)


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


# -- database servers: MariaDB/MySQL and PostgreSQL ------------------------------------------------
# Each suite that needs a server uses its own database on it; these fixtures give the URL of
# `sqla_dialects` (created when missing) with a user that needs no password, or skip/fail
# through server_unavailable when the server does not answer.

MYSQL_HOST = os.environ.get("SQLADAPTER_TEST_MYSQL_HOST", "127.0.0.1:3306")
POSTGRESQL_HOST = os.environ.get("SQLADAPTER_TEST_POSTGRESQL_HOST", "127.0.0.1:5432")
DIALECTS_DATABASE = "sqla_dialects"


def mysql_admin(database: str | None = None):
    """A PyMySQL connection as root (autocommit), or server_unavailable."""
    try:
        import pymysql
    except ImportError:
        server_unavailable("PyMySQL is not installed: pip install ./plugins/sqladapter-mysql")
    host, _, port = MYSQL_HOST.partition(":")
    try:
        return pymysql.connect(
            host=host, port=int(port or 3306), user="root", database=database, autocommit=True, connect_timeout=5
        )
    except pymysql.err.OperationalError as exc:
        server_unavailable(f"no MySQL/MariaDB server answers on {MYSQL_HOST}: {exc.args[-1]}")


def postgresql_admin(database: str = "postgres"):
    """A psycopg connection as postgres (autocommit), or server_unavailable."""
    try:
        import psycopg
    except ImportError:
        server_unavailable("psycopg is not installed: pip install ./plugins/sqladapter-postgresql")
    host, _, port = POSTGRESQL_HOST.partition(":")
    try:
        return psycopg.connect(
            host=host, port=int(port or 5432), user="postgres", dbname=database, autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        server_unavailable(f"no PostgreSQL server answers on {POSTGRESQL_HOST}: {str(exc).strip()}")


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
