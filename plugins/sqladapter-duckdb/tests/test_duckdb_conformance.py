"""The DuckDB dialect against sqladapter's conformance kit, on a .duckdb file in a temporary folder,
and what only DuckDB has: its infinities, maps, and connection options that would undo read-only."""

from __future__ import annotations

import duckdb
import pytest

from sqladapter import ConnectionConfigError
from sqladapter.testing import Database, DialectSuite, same_instant

UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
DOC = {"a": [1, 2]}

# Reads and writes outside the database file: off with enable_external_access=false.
OUTSIDE = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "COPY numbers TO 'stolen.csv'",
    "ATTACH 'other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
]


class TestDuckDBConformance(DialectSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def database(cls, tmp_path_factory):
        data_dir = tmp_path_factory.mktemp("duckdb-kit")
        path = data_dir / "kit.duckdb"
        with duckdb.connect(str(path)) as conn:
            conn.execute("CREATE SEQUENCE sqla_seq")
            conn.execute("CHECKPOINT")
        yield Database(
            dialect="duckdb",
            connection_string="kit.duckdb",
            raw_connect=lambda: duckdb.connect(str(path)),
            data_dir=data_dir,
            # DuckDB refuses a read-write connection to a file it holds open read-only.
            raw_while_connected=False,
            database_refuses=OUTSIDE,
            guard_refuses=OUTSIDE,
            probe="SELECT (SELECT count(*) FROM people) AS n, (SELECT count(*) FROM duckdb_databases()) AS dbs, "
            "(SELECT count(*) FROM duckdb_tables() WHERE temporary) AS temps, "
            "current_setting('enable_external_access') AS ext, current_setting('memory_limit') AS mem, "
            "current_setting('threads') AS threads",
            # The configuration is locked: a query cannot change what the next one runs with.
            # (Temporary tables and SET VARIABLE are refused by the guard alone: see
            # test_guard_alone_keeps_temporary_objects_from_the_next_task.)
            state_changes=[
                "SET memory_limit = '1GB'",
                "SET threads = 1",
                "SET enable_external_access = true",
                "ATTACH ':memory:' AS kit_other",
            ],
            refused_connection_strings=[
                "duckdb:///kit.duckdb?access_mode=read_write",
                "duckdb:///kit.duckdb?enable_external_access=true",
            ],
            slow_query="SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range + b.range = 7",
            # DuckDB's interrupt() is not looked at inside list_sort: 9 s past a 300 ms limit. The
            # call goes on in the background for those seconds, using a core.
            unstoppable_query="SELECT list_sort(range(30000000))[1] AS v",
            types={
                "null": "NULL",
                "boolean": "true",
                "integer": "42",
                "safe integer": "9007199254740991::BIGINT",
                "big integer": "9007199254740993::BIGINT",
                "negative big integer": "-9007199254740993::BIGINT",
                "unsigned big integer": "18446744073709551615::UBIGINT",
                "huge integer": "1267650600228229401496703205376::HUGEINT",
                "float": "1.5::DOUBLE",
                "float nan": "'nan'::DOUBLE",
                "float infinity": "'inf'::DOUBLE",
                "float negative infinity": "'-inf'::FLOAT",
                "decimal": "12.50::DECIMAL(10,2)",
                "wide decimal": "12345678901234567890.123456789::DECIMAL(38,9)",
                "text": "'héllo'",
                "bytes": "'\\x00\\xFF'::BLOB",
                "empty bytes": "''::BLOB",
                "date": "DATE '2024-02-29'",
                # Infinities: the python client reads them as date.max / datetime.max (and .min), the
                # same as a real last (or first) day, which must stay a date.
                "last date": "DATE '9999-12-31'",
                "infinite date": "'infinity'::DATE",
                "negative infinite date": "'-infinity'::DATE",
                "timestamp": "TIMESTAMP '2024-02-29 13:14:15.5'",
                "infinite timestamp": "'infinity'::TIMESTAMP",
                "negative infinite timestamp": "'-infinity'::TIMESTAMP",
                "timestamp with time zone": "TIMESTAMPTZ '2024-02-29 13:14:15+02'",
                "time": "TIME '13:14:15'",
                "time with fraction": "TIME '13:14:15.5'",
                "time with time zone": "TIMETZ '13:14:15+02'",
                "interval": "INTERVAL '1 day 2 hours 3.5 seconds'",
                "uuid": f"'{UUID}'::UUID",
                "json": "'{\"a\": [1, 2]}'::JSON",
                "array": "[1, 2, 3]",
                "array of arrays": "[[1, 2], [3, 4]]",
                "struct": "{'x': 1, 'y': 'z'}",
                "map with text keys": "MAP {'k': 1}",
                # Keys that are not text: as object keys they would turn into text (or could not be
                # keys at all), so such a map is a list of key/value objects, in the map's order.
                "map with other keys": "MAP {1: 'a', 2: 'b'}",
                "enum": "'b'::ENUM('a', 'b')",
            },
            extra_types={
                "bignum": ("42::BIGNUM", 42),
                "bignum_big": ("1267650600228229401496703205376::BIGNUM", "1267650600228229401496703205376"),
                "first_date": ("DATE '0001-01-01'", "0001-01-01"),
                "last_timestamp": ("TIMESTAMP '9999-12-31 23:59:59.999999'", "9999-12-31T23:59:59.999999"),
                "first_timestamp": ("TIMESTAMP '0001-01-01 00:00:00'", "0001-01-01T00:00:00"),
                "tz_inf": ("'infinity'::TIMESTAMPTZ", "infinity"),
                "tz_ninf": ("'-infinity'::TIMESTAMPTZ", "-infinity"),
                "ns_inf": ("'infinity'::TIMESTAMP_NS", "infinity"),
                "ms_ninf": ("'-infinity'::TIMESTAMP_MS", "-infinity"),
                "s_inf": ("'infinity'::TIMESTAMP_S", "infinity"),
                "ns": ("TIMESTAMP_NS '2024-02-29 13:14:15.123456'", "2024-02-29T13:14:15.123456"),
                "days": ("['infinity'::DATE, DATE '9999-12-31', NULL]", ["infinity", "9999-12-31", None]),
                # 24:00:00 is a TIME that Python cannot hold: DuckDB's own text.
                "clock_end": ("'24:00:00'::TIME", "24:00:00"),
                "docs": ("['{\"a\": [1, 2]}'::JSON]", [DOC]),
                "fixed": ("[1, 2]::INTEGER[2]", [1, 2]),
                "nested": ("[[1], [], NULL]", [[1], [], None]),
                "deep": (
                    "{'when': ['infinity'::DATE], 'big': 9007199254740993::BIGINT}",
                    {"when": ["infinity"], "big": "9007199254740993"},
                ),
                "list_keys": ("MAP {[1, 2]: 'x'}", [{"key": [1, 2], "value": "x"}]),
                "struct_keys": ("MAP {{'x': 1}: DATE '2024-02-29'}", [{"key": {"x": 1}, "value": "2024-02-29"}]),
                "map_in_list": ("[MAP {1: 2}]", [[{"key": 1, "value": 2}]]),
                "map_in_map": ("MAP {'k': MAP {1: 2}}", {"k": [{"key": 1, "value": 2}]}),
            },
            column_types={
                "integer": "INTEGER",
                "huge integer": "HUGEINT",
                "unsigned big integer": "UBIGINT",
                "bignum": "BIGNUM",
                "decimal": "DECIMAL(10,2)",
                "struct": "STRUCT(x INTEGER, y VARCHAR)",
                "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
                "ns_inf": "TIMESTAMP_NS",
                "time": "TIME",
                "time with time zone": "TIME WITH TIME ZONE",
                "json": "JSON",
                "map with other keys": "MAP(INTEGER, VARCHAR)",
            },
        )

    # -- DuckDB's own ---------------------------------------------------------------------------

    def test_infinities_are_infinity_and_the_last_real_day_stays_a_date(self, kit):
        # The python client reads 'infinity' as date.max / datetime.max, equal to a real 9999-12-31;
        # in one column, row by row, each must still come back as what it is.
        with kit.session() as s:
            out = s.run(
                "SELECT d, ts, tz, ds FROM (VALUES"
                " (1, DATE '2024-02-29', TIMESTAMP '2024-02-29 13:14:15', TIMESTAMPTZ '2024-02-29 13:14:15+00', [DATE '2024-02-29']),"
                " (2, 'infinity'::DATE, '-infinity'::TIMESTAMP, 'infinity'::TIMESTAMPTZ, ['-infinity'::DATE]),"
                " (3, DATE '9999-12-31', TIMESTAMP '9999-12-31 23:59:59.999999', NULL, [DATE '0001-01-01']),"
                " (4, '-infinity'::DATE, TIMESTAMP '0001-01-01 00:00:00', '-infinity'::TIMESTAMPTZ, NULL),"
                " (5, DATE '0044-03-15 (BC)', TIMESTAMP '294247-01-10 04:00:54', NULL, NULL)"
                ") AS t(n, d, ts, tz, ds) ORDER BY n"
            )
        tz = [row.pop("tz") for row in out["rows"]]
        assert same_instant("2024-02-29T13:14:15+00:00")(tz[0]) and tz[1:] == ["infinity", None, "-infinity", None]
        assert out["rows"] == [
            {"d": "2024-02-29", "ts": "2024-02-29T13:14:15", "ds": ["2024-02-29"]},
            {"d": "infinity", "ts": "-infinity", "ds": ["-infinity"]},
            {"d": "9999-12-31", "ts": "9999-12-31T23:59:59.999999", "ds": ["0001-01-01"]},
            {"d": "-infinity", "ts": "0001-01-01T00:00:00", "ds": None},
            # Years Python cannot hold: as DuckDB writes them.
            {"d": "0044-03-15 (BC)", "ts": "294247-01-10 04:00:54", "ds": None},
        ]

    def test_maps_with_keys_that_are_not_text_are_lists_of_key_value_objects(self, kit):
        with kit.session() as s:
            out = s.run(
                # An empty map as MAP([], []): sqlglot writes MAP {}::MAP(...) back as "MAP MAP()", which
                # it cannot read again, so that spelling is refused.
                "SELECT m FROM (VALUES (1, MAP {3: 'c', 1: 'a'}), (2, MAP([]::INTEGER[], []::VARCHAR[])), (3, NULL),"
                " (4, MAP {2: NULL})) AS t(n, m) ORDER BY n"
            )
        assert [row["m"] for row in out["rows"]] == [
            [{"key": 3, "value": "c"}, {"key": 1, "value": "a"}],  # the map's order, not the keys'
            [],
            None,
            [{"key": 2, "value": None}],
        ]

    def test_named_connection_options_cannot_undo_read_only(self, kit):
        database = kit.database.data_dir / "kit.duckdb"
        for option in ("enable_external_access=true", "lock_configuration=false", "access_mode=read_write"):
            with kit.session(environ={"SQLADAPTER_CONNECTION_LOOSE": f"duckdb:///{database}?{option}"}) as s:
                outcome = s.attempt("SELECT 1", connection="loose")
            assert isinstance(outcome.error, ConnectionConfigError), outcome.describe()
            assert option.split("=")[0] in outcome.error.message

    def test_no_temporary_table_or_variable_reaches_the_next_task_even_past_the_guard(self, kit):
        # Each task runs on a session of its own (a duplicate of the kept connection).
        with kit.session() as s:
            probe = "SELECT (SELECT count(*) FROM duckdb_tables() WHERE temporary) AS temps"
            before = s.run(probe)["rows"]
            with s.guard_bypassed():
                s.attempt("CREATE TEMP TABLE kit_temp (i INTEGER)")
                s.attempt("SET VARIABLE kit_v = 42")
                variable = s.run("SELECT getvariable('kit_v') AS v")["rows"]
            assert s.run(probe)["rows"] == before
            assert variable == [{"v": None}]
