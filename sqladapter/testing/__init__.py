"""The conformance kit: the checks every sqladapter dialect plugin's own tests run.

A plugin's test module subclasses `DialectSuite` and gives it one fixture, `database`, that
sets up a real database and returns a `Database` describing it::

    # tests/test_oracle_conformance.py
    import oracledb
    import pytest
    from sqladapter.testing import Database, DialectSuite, server_unavailable

    class TestOracle(DialectSuite):
        @pytest.fixture(scope="class")
        def database(self, tmp_path_factory):
            try:
                oracledb.connect(user="kit", dsn="127.0.0.1/FREEPDB1").close()
            except oracledb.Error as exc:
                server_unavailable(f"no Oracle server answers: {exc}")
            yield Database(
                dialect="oracle",
                connection_string="oracle://kit@127.0.0.1/FREEPDB1",
                raw_connect=lambda: oracledb.connect(user="kit", dsn="127.0.0.1/FREEPDB1"),
                data_dir=tmp_path_factory.mktemp("data"),
                slow_query="SELECT count(*) FROM all_objects, all_objects, all_objects",
                types={"integer": "42", "text": "'héllo'", "date": "DATE '2024-02-29'"},
            )

`pytest` then runs every check of the suite against that database: the read-only layers
each with the other bypassed (the guard approving everything, then the database opened
read-write), the hostile SQL corpus for the dialect's tags, deadlines, rows and bytes read,
bad input, the JSON type contract for the kinds the plugin lists, state between tasks on a
pooled connection, and error classification. Each property is checked by its effect: writes
are looked for with the plugin's own driver (`raw_connect`), rows are counted where the
driver hands them over, time is measured from outside. A check whose `Database` field is left
empty is skipped, naming the field. `Database` documents every field; the tables the kit
creates itself are listed there.

Make `database` class-scoped (or wider), so that the database and the kit's tables are set up
once. A plugin adds checks of its own as more test methods (they may take `kit` too), and
marks a known gap by overriding one check with a pytest mark and calling `super()`.

The kit imports pytest; the runtime package never imports the kit.
"""

from ._kit import Kit, Outcome, Session, promise, report
from .contract import KINDS, Kind, json_document, same_instant
from .database import Database
from .suite import DialectSuite

__all__ = [
    "KINDS",
    "Database",
    "DialectSuite",
    "Kind",
    "Kit",
    "Outcome",
    "Session",
    "json_document",
    "promise",
    "report",
    "require_servers",
    "same_instant",
    "server_unavailable",
]


def require_servers() -> bool:
    """True when a missing database server must fail the tests (SQLADAPTER_REQUIRE_SERVERS=1, as in CI)."""
    import os

    return os.environ.get("SQLADAPTER_REQUIRE_SERVERS") == "1"


def server_unavailable(reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI) a test whose server does not answer."""
    import pytest

    if require_servers():
        pytest.fail(f"{reason} (SQLADAPTER_REQUIRE_SERVERS=1 turns this skip into a failure)", pytrace=False)
    pytest.skip(reason)
