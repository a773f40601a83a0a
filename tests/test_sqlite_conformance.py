"""The built-in SQLite dialect against the conformance kit, on a file in a temporary folder."""

from __future__ import annotations

import sqlite3

import pytest

from sqladapter.testing import Database, DialectSuite


class TestSQLiteConformance(DialectSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def database(cls, tmp_path_factory):
        data_dir = tmp_path_factory.mktemp("sqlite-kit")
        path = data_dir / "kit.db"
        sqlite3.connect(path).close()
        yield Database(
            dialect="sqlite",
            connection_string="kit.db",
            raw_connect=lambda: sqlite3.connect(path, isolation_level=None),
            data_dir=data_dir,
            # The guard refuses these; with the database opened read-write, nothing else would.
            guard_refuses=["ATTACH DATABASE 'other.db' AS other", "PRAGMA user_version = 3"],
            probe="SELECT (SELECT count(*) FROM people) AS n, (SELECT count(*) FROM pragma_database_list) AS dbs, "
            "(SELECT count(*) FROM sqlite_temp_master) AS temps",
            state_changes=[
                "CREATE TEMP TABLE kit_temp (i INTEGER)",
                "ATTACH DATABASE ':memory:' AS kit_other",
                "PRAGMA query_only = 0",
            ],
            refused_connection_strings=["sqlite:///kit.db?mode=rw", "sqlite:///kit.db?uri=true", "sqlite:///kit.db?timeout=0"],
            slow_query="WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000) SELECT count(*) FROM c",
            # LIKE over 2 MB inside one call: the progress handler never runs.
            unstoppable_query="SELECT printf('%.*c', 1900000, 'x') LIKE ('%' || printf('%.*c', 490, 'x') || 'y%') AS v",
            types={
                "null": "NULL",
                "integer": "42",
                "big integer": "9007199254740993",
                "negative big integer": "-9007199254740993",
                "float": "1.5",
                "float infinity": "9e999",
                "float negative infinity": "-9e999",
                "text": "'héllo'",
                "bytes": "x'00ff'",
                "empty bytes": "x''",
            },
            column_types={"integer": "INTEGER", "float": "REAL", "text": "TEXT", "bytes": "BLOB"},
        )
