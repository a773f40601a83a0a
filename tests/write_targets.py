"""One writable database per dialect for the write tests, and a raw-driver view of its rows.

SQLite and DuckDB are files in the test's directory; MariaDB and PostgreSQL use the database
`sqla_writes` on the test servers (no other suite touches it), with a table per test. Every
effect a test checks is read back through the plain driver, never through sqladapter.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import mysql_admin, mysql_url, postgresql_admin, postgresql_url

from sqladapter import ledger
from sqladapter.runtime import Runtime

DATABASE = "sqla_writes"
DIALECTS = ("sqlite", "duckdb", "mysql", "postgresql")
NAME = "shop"


@dataclass
class Target:
    """A writable named connection `shop` on one dialect, its runtime, and the raw driver."""

    dialect: str
    url: str
    table: str
    path: Path | None
    runtime: Runtime
    environ: dict[str, str]

    @contextlib.contextmanager
    def raw(self) -> Iterator[Any]:
        """A plain driver connection (autocommitting where the driver allows), closed after."""
        if self.dialect == "sqlite":
            connection: Any = sqlite3.connect(str(self.path), isolation_level=None)
        elif self.dialect == "duckdb":
            import duckdb

            # One process holds a DuckDB file in one configuration: the runtime's read-only
            # engines (from query_sql) close first.
            self.runtime.pools.close_file_engines()
            connection = duckdb.connect(str(self.path))
        elif self.dialect == "mysql":
            connection = mysql_admin(DATABASE)
        else:
            connection = postgresql_admin(DATABASE)
        try:
            yield connection
        finally:
            connection.close()

    def sql(self, text: str, params: Any = None) -> list[tuple]:
        """Run `text` through the raw driver (placeholders: `%s` on the servers, `?` on files); the rows."""
        if self.dialect in ("sqlite", "duckdb"):
            text = text.replace("%s", "?")
        with self.raw() as connection:
            cursor = connection.cursor()
            cursor.execute(text, params or ())
            rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
            if self.dialect == "sqlite":
                connection.commit()
            return rows

    def rows(self) -> list[tuple]:
        """The table's (id, status, qty) rows by id, re-read by the raw driver."""
        return self.sql(f"SELECT id, status, qty FROM {self.table} ORDER BY id")

    def execute(self, **fields: Any) -> dict[str, Any]:
        return self.runtime.execute({"connection": NAME, **fields})


def make_target(dialect: str, tmp_path: Path, *, writable: bool = True, rows: int = 3) -> Target:
    """A `shop` connection on `dialect` with a fresh table of `rows` rows and the ledger created."""
    table = f"items_{uuid.uuid4().hex[:10]}"
    path = None
    if dialect == "sqlite":
        path = tmp_path / "shop.db"
        url = f"sqlite:///{path}"
    elif dialect == "duckdb":
        path = tmp_path / "shop.duckdb"
        url = f"duckdb:///{path}"
    elif dialect == "mysql":
        admin = mysql_admin()
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        admin.close()
        url = mysql_url(DATABASE)
    else:
        admin = postgresql_admin()
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            with contextlib.suppress(Exception):
                admin.execute(f"CREATE DATABASE {DATABASE}")
        admin.close()
        url = postgresql_url(DATABASE)
    environ = {"SQLADAPTER_DATA_DIR": str(tmp_path), "SQLADAPTER_CONNECTION_SHOP": url}
    if writable:
        environ["SQLADAPTER_CONNECTION_SHOP_WRITABLE"] = "1"
    target = Target(dialect, url, table, path, Runtime(environ=environ), environ)
    target.sql(
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, status VARCHAR(20) NOT NULL, qty INTEGER NOT NULL, "
        f"CONSTRAINT {table}_qty_positive CHECK (qty >= 0))"
    )
    for i in range(1, rows + 1):
        target.sql(f"INSERT INTO {table} (id, status, qty) VALUES (%s, %s, %s)", (i, "placed", 10))
    if writable:
        ledger.init(target.runtime, NAME)
    return target


def drop(target: Target) -> None:
    target.runtime.close()
    if target.dialect in ("mysql", "postgresql"):
        with contextlib.suppress(Exception):
            target.sql(f"DROP TABLE IF EXISTS {target.table}")
