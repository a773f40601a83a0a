"""The database servers the tests use, in one place: where they are, and admin connections.

MariaDB/MySQL and PostgreSQL tests run against real servers: SQLADAPTER_TEST_MYSQL_HOST
(default 127.0.0.1:3306, root without a password) and SQLADAPTER_TEST_POSTGRESQL_HOST (default
127.0.0.1:5432, postgres with trust authentication). Where a server does not answer the test
skips with a one-line reason, unless SQLADAPTER_REQUIRE_SERVERS=1 (set by .ci/run), where it
fails instead. Test modules import from here, never from conftest.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVERS = os.environ.get("SQLADAPTER_REQUIRE_SERVERS") == "1"


def server_unavailable(reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI) a test whose server does not answer."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (SQLADAPTER_REQUIRE_SERVERS=1 turns this skip into a failure)")
    pytest.skip(reason)


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


MYSQL_ADDRESS, _, _MYSQL_PORT = MYSQL_HOST.partition(":")
MYSQL_PORT = int(_MYSQL_PORT or 3306)
POSTGRESQL_ADDRESS, _, _POSTGRESQL_PORT = POSTGRESQL_HOST.partition(":")
POSTGRESQL_PORT = int(_POSTGRESQL_PORT or 5432)


def mysql_url(database: str, scheme: str = "mysql") -> str:
    """A URL of `database` on the MySQL/MariaDB server, as root without a password."""
    return f"{scheme}://root@{MYSQL_HOST}/{database}"


def postgresql_url(database: str, scheme: str = "postgresql", user: str = "postgres") -> str:
    """A URL of `database` on the PostgreSQL server (trust authentication)."""
    return f"{scheme}://{user}@{POSTGRESQL_HOST}/{database}"
