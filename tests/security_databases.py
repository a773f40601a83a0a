"""The security tests' own databases, one per dialect, and the state they must keep.

Each holds the tutorial's `people`, an `audit` table, a sequence, and (on the servers) a
stored function and procedure that delete every person: a query that calls them passes any
parser, so only the database's read-only session stands between them and the data. Beside
the databases sit files outside the data directory: a secret no query may read, and a
world-writable directory no query may write into (world-writable so that a server process
that slipped through would succeed, and the test would see it).

MariaDB and PostgreSQL use the database `sqla_security` only, created here when missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from servers import MYSQL_ADDRESS, MYSQL_PORT, POSTGRESQL_ADDRESS, POSTGRESQL_PORT, mysql_url, postgresql_url

from sqladapter.runtime import Runtime, default
from sqladapter.seed import tutorial_people
from sqladapter.settings import Settings
from sqladapter.testing.hostile import Outside

DATABASE = "sqla_security"
DIALECTS = ("sqlite", "duckdb", "mysql", "postgresql")
MYSQL = {"host": MYSQL_ADDRESS, "port": MYSQL_PORT, "user": "root", "password": ""}
POSTGRES = {"host": POSTGRESQL_ADDRESS, "port": POSTGRESQL_PORT, "user": "postgres"}
MYSQL_URL = mysql_url(DATABASE)
POSTGRES_URL = postgresql_url(DATABASE)
LOCK_NAME = "sqla_security_lock"
PEOPLE_COLUMNS = ("name", "surname", "birth_date", "zip_code")


def plugin_installed(dialect: str) -> bool:
    return dialect in default().registry.by_name


@dataclass
class SecurityTarget:
    """One dialect's database as the security tests use it."""

    dialect: str
    connection_string: str
    settings: Settings
    #: A read-only query whose answer changes if a hostile statement poisoned the session.
    probe: str
    #: Everything a hostile statement could change, read without sqladapter.
    snapshot: Callable[[], Any]
    cleanup: Callable[[], None] = lambda: None
    extra: dict[str, Any] = field(default_factory=dict)
    _runtime: Runtime | None = field(default=None, init=False, repr=False)

    @property
    def runtime(self) -> Runtime:
        """The Runtime the tests run this target's queries on, made with its settings."""
        if self._runtime is None:
            self._runtime = Runtime(self.settings)
        return self._runtime

    def run(self, **fields: Any) -> dict[str, Any]:
        return self.runtime.run(connection_string=self.connection_string, **fields)

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
        self.cleanup()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def _directory(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# -- SQLite ----------------------------------------------------------------------------------------


def sqlite_target(data_dir: Path, outside: Outside) -> SecurityTarget:
    path = data_dir / "hostile.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT, surname TEXT, birth_date TEXT, zip_code TEXT)")
        conn.executemany("INSERT INTO people VALUES (:name, :surname, :birth_date, :zip_code)", tutorial_people())
        conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("INSERT INTO audit VALUES (1, 'created')")
    conn.close()

    def snapshot() -> Any:
        return {"file": _file_digest(path), "data_dir": _directory(data_dir), "outside": outside.listing()}

    return SecurityTarget(
        "sqlite",
        "hostile.db",
        Settings.from_env({"SQLADAPTER_DATA_DIR": str(data_dir)}),
        "SELECT (SELECT count(*) FROM people) AS n, (SELECT count(*) FROM pragma_database_list) AS dbs, "
        "(SELECT count(*) FROM sqlite_temp_master) AS temps",
        snapshot,
    )


# -- DuckDB ----------------------------------------------------------------------------------------


def duckdb_target(data_dir: Path, outside: Outside) -> SecurityTarget:
    import duckdb

    path = data_dir / "hostile.duckdb"
    conn = duckdb.connect(str(path))
    try:
        conn.execute("CREATE TABLE people (name VARCHAR, surname VARCHAR, birth_date VARCHAR, zip_code VARCHAR)")
        conn.executemany(
            "INSERT INTO people VALUES (?, ?, ?, ?)", [[p[c] for c in PEOPLE_COLUMNS] for p in tutorial_people()]
        )
        conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, note VARCHAR)")
        conn.execute("INSERT INTO audit VALUES (1, 'created')")
        conn.execute("CREATE SEQUENCE sqla_seq")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()

    def snapshot() -> Any:
        return {"file": _file_digest(path), "data_dir": _directory(data_dir), "outside": outside.listing()}

    return SecurityTarget(
        "duckdb",
        "hostile.duckdb",
        Settings.from_env({"SQLADAPTER_DATA_DIR": str(data_dir)}),
        "SELECT (SELECT count(*) FROM people) AS n, (SELECT count(*) FROM duckdb_databases()) AS dbs, "
        "(SELECT count(*) FROM duckdb_tables() WHERE temporary) AS temps, "
        "current_setting('enable_external_access') AS ext, current_setting('memory_limit') AS mem",
        snapshot,
    )


# -- MariaDB / MySQL -------------------------------------------------------------------------------


def mysql_admin(database: str | None = DATABASE) -> Any:
    """A root connection outside sqladapter, autocommit, for setup and checks."""
    import pymysql

    return pymysql.connect(**MYSQL, database=database, autocommit=True, connect_timeout=5)


def mysql_create_database() -> None:
    conn = mysql_admin(None)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    finally:
        conn.close()


def mysql_target(outside: Outside) -> SecurityTarget:
    mysql_create_database()
    admin = mysql_admin()
    with admin.cursor() as cur:
        for statement in (
            "DROP FUNCTION IF EXISTS sqla_wipe",
            "DROP PROCEDURE IF EXISTS sqla_wipe_proc",
            "DROP SEQUENCE IF EXISTS sqla_seq",
            "DROP TABLE IF EXISTS people, audit",
            "CREATE TABLE people (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100), surname VARCHAR(100), "
            "birth_date VARCHAR(10), zip_code VARCHAR(5))",
            "CREATE TABLE audit (id INT PRIMARY KEY, note VARCHAR(50))",
            "INSERT INTO audit VALUES (1, 'created')",
            "CREATE SEQUENCE sqla_seq",
            "CREATE FUNCTION sqla_wipe() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM people; RETURN 1; END",
            "CREATE PROCEDURE sqla_wipe_proc() MODIFIES SQL DATA BEGIN DELETE FROM people; END",
        ):
            cur.execute(statement)
        cur.executemany(
            "INSERT INTO people (name, surname, birth_date, zip_code) VALUES (%s, %s, %s, %s)",
            [[p[c] for c in PEOPLE_COLUMNS] for p in tutorial_people()],
        )

    def snapshot() -> Any:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY table_name",
                (DATABASE,),
            )
            tables = cur.fetchall()
            sums = {}
            for name, kind in tables:
                if kind == "BASE TABLE":
                    cur.execute(f"CHECKSUM TABLE `{name}` EXTENDED")
                    sums[name] = cur.fetchone()[1]
            cur.execute("SELECT next_not_cached_value FROM sqla_seq")
            sequence = cur.fetchone()
            cur.execute(
                "SELECT routine_name FROM information_schema.routines WHERE routine_schema = %s ORDER BY 1", (DATABASE,)
            )
            routines = cur.fetchall()
            cur.execute("SELECT user, host FROM mysql.user WHERE user LIKE 'sqla_evil%%'")
            users = cur.fetchall()
            cur.execute("SHOW DATABASES LIKE 'sqla_evil%%'")
            databases = cur.fetchall()
            cur.execute(f"SELECT IS_FREE_LOCK('{LOCK_NAME}'), @@GLOBAL.read_only")
            server = cur.fetchone()
        return {
            "tables": tables,
            "checksums": sums,
            "sequence": sequence,
            "routines": routines,
            "users": users,
            "databases": databases,
            "server": server,
            "outside": outside.listing(),
        }

    return SecurityTarget(
        "mysql",
        MYSQL_URL,
        Settings.from_env({}),
        f"SELECT (SELECT count(*) FROM people) AS n, @@session.sql_mode AS mode, DATABASE() AS db, "
        f"IS_USED_LOCK('{LOCK_NAME}') IS NULL AS lock_free",
        snapshot,
        admin.close,
    )


# -- PostgreSQL ------------------------------------------------------------------------------------


def postgres_admin(database: str = DATABASE) -> Any:
    """A superuser connection outside sqladapter, autocommit, for setup and checks."""
    import psycopg

    return psycopg.connect(**POSTGRES, dbname=database, autocommit=True, connect_timeout=5)


def postgres_create_database() -> None:
    import psycopg

    conn = postgres_admin("postgres")
    try:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return
        # CREATE DATABASE copies template1 and fails while anyone else is connected to it.
        for attempt in range(20):
            try:
                conn.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg.errors.DuplicateDatabase:
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.25 * (attempt + 1))
        conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()


def postgres_target(outside: Outside) -> SecurityTarget:
    postgres_create_database()
    admin = postgres_admin()
    for statement in (
        "CREATE EXTENSION IF NOT EXISTS dblink",
        "DROP FUNCTION IF EXISTS sqla_wipe()",
        "DROP PROCEDURE IF EXISTS sqla_wipe_proc()",
        "DROP TABLE IF EXISTS people, audit, evil, evil_copy",
        "DROP SEQUENCE IF EXISTS sqla_seq",
        "CREATE TABLE people (id serial PRIMARY KEY, name text, surname text, birth_date text, zip_code text)",
        "CREATE TABLE audit (id int PRIMARY KEY, note text)",
        "INSERT INTO audit VALUES (1, 'created')",
        "CREATE SEQUENCE sqla_seq",
        "CREATE FUNCTION sqla_wipe() RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM people; RETURN 1; END $$",
        "CREATE PROCEDURE sqla_wipe_proc() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM people; END $$",
    ):
        admin.execute(statement)
    with admin.cursor() as cur:
        cur.executemany(
            "INSERT INTO people (name, surname, birth_date, zip_code) VALUES (%s, %s, %s, %s)",
            [[p[c] for c in PEOPLE_COLUMNS] for p in tutorial_people()],
        )

    def snapshot() -> Any:
        relations = admin.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind IN ('r','v','m','S','p') "
            "ORDER BY 1"
        ).fetchall()
        sums = {
            name: admin.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{name}\" t"
            ).fetchone()[0]
            for name, kind in relations
            if kind == "r"
        }
        return {
            "relations": relations,
            "checksums": sums,
            "sequence": admin.execute("SELECT last_value, is_called FROM sqla_seq").fetchone(),
            "functions": admin.execute(
                "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public' ORDER BY 1"
            ).fetchall(),
            "schemas": admin.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall(),
            "roles": admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'sqla_evil%'").fetchall(),
            "databases": admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sqla_evil%'").fetchall(),
            "comments": admin.execute("SELECT obj_description('people'::regclass)").fetchone(),
            "advisory_locks": admin.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                "(SELECT oid FROM pg_database WHERE datname = %s)",
                (DATABASE,),
            ).fetchone(),
            "large_objects": admin.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone(),
            "auto_conf": admin.execute(
                "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'"
            ).fetchone(),
            "extensions": admin.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall(),
            "outside": outside.listing(),
        }

    return SecurityTarget(
        "postgresql",
        POSTGRES_URL,
        Settings.from_env({}),
        "SELECT (SELECT count(*) FROM people) AS n, current_setting('search_path') AS sp, "
        "current_setting('default_transaction_read_only') AS ro, current_user AS u",
        snapshot,
        admin.close,
    )


def make_target(dialect: str, data_dir: Path, outside: Outside) -> SecurityTarget:
    """Create (or recreate) the dialect's security database; raises OSError-like errors when
    a server does not answer."""
    if dialect == "sqlite":
        return sqlite_target(data_dir, outside)
    if dialect == "duckdb":
        return duckdb_target(data_dir, outside)
    if dialect == "mysql":
        return mysql_target(outside)
    if dialect == "postgresql":
        return postgres_target(outside)
    raise ValueError(dialect)


@contextlib.contextmanager
def exclusive_use() -> Any:
    """Hold the `sqla_security` databases for this process alone until the block ends.

    Every test run in the shared tree collects these tests, and two runs recreating the same
    tables at once would see each other's changes as leaks; a second run waits here instead.
    """
    with open(os.path.join(tempfile.gettempdir(), "sqla_security.lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
