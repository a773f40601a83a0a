"""What differs between the dialects in the shared suite: SQL spellings, type literals, expected JSON.

Each `Case` fills the same `numbers` table (n = 1..10) in its database and says how to run
what the suite checks on every dialect. The suite itself (test_dialects.py) is written once.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from servers import mysql_admin, postgresql_admin

NUMBERS = list(range(1, 11))


def same_instant(expected: str) -> Callable[[Any], bool]:
    """An ISO 8601 string with an offset, naming the same instant as `expected`."""

    def check(value: Any) -> bool:
        parsed = dt.datetime.fromisoformat(value)
        return parsed.tzinfo is not None and parsed == dt.datetime.fromisoformat(expected)

    check.__name__ = f"same_instant({expected})"
    return check


def json_document(expected: Any) -> Callable[[Any], bool]:
    """The document itself, or (MariaDB, whose JSON is text on the wire) its text."""

    def check(value: Any) -> bool:
        return value == expected or (isinstance(value, str) and json.loads(value) == expected)

    check.__name__ = f"json_document({expected!r})"
    return check


@dataclass
class Case:
    """One dialect as the suite sees it."""

    name: str
    #: run_query fields that select the database (connection_string or connection).
    target: dict[str, str]
    #: A query that runs for seconds unless the time limit stops it.
    slow_query: str
    #: Statements the parser refuses.
    refused_by_parser: list[str]
    #: Statements the database itself refuses when the parser is bypassed.
    refused_by_database: list[str]
    #: column alias -> (SQL expression, expected JSON value or a predicate on it).
    types: dict[str, tuple[str, Any]]
    #: column alias -> the type name `columns` must report.
    column_types: dict[str, str] = field(default_factory=dict)
    #: A one-row table for types that only a column can have (MySQL's BIT, JSON).
    types_from: str = ""

    def types_query(self) -> str:
        select = "SELECT " + ", ".join(f"{sql} AS {alias}" for alias, (sql, _) in self.types.items())
        return f"{select} FROM {self.types_from}" if self.types_from else select


WRITES = [
    "DELETE FROM numbers WHERE n = 1",
    "UPDATE numbers SET n = n + 100",
    "INSERT INTO numbers (n) VALUES (11)",
    "CREATE TABLE sneaky (i INTEGER)",
    "DROP TABLE numbers",
]

UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
DOC = {"a": [1, 2]}
COMMON_TYPES = {
    "n_int": ("42", 42),
    "n_big": ("9007199254740993", "9007199254740993"),
    "s_text": ("'héllo'", "héllo"),
    "v_null": ("NULL", None),
}


# -- SQLite (built in) ------------------------------------------------------------------------------


def sqlite_case(data_dir: Path) -> Case:
    with sqlite3.connect(data_dir / "numbers.db") as conn:
        conn.execute("CREATE TABLE numbers (n INTEGER)")
        conn.executemany("INSERT INTO numbers VALUES (?)", [(n,) for n in NUMBERS])
    conn.close()
    return Case(
        name="sqlite",
        target={"connection_string": "numbers.db"},
        slow_query="WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        refused_by_parser=WRITES + ["ATTACH DATABASE 'other.db' AS other", "PRAGMA user_version = 3"],
        refused_by_database=WRITES,
        types={
            **COMMON_TYPES,
            "n_float": ("1.5", 1.5),
            "n_neg_big": ("-9007199254740993", "-9007199254740993"),
            "n_inf": ("9e999", None),
            "n_ninf": ("-9e999", None),
            "b_blob": ("x'00ff'", {"$base64": "AP8="}),
            "b_empty": ("x''", {"$base64": ""}),
        },
        column_types={"n_int": "INTEGER", "n_float": "REAL", "s_text": "TEXT", "b_blob": "BLOB"},
    )


# -- DuckDB -----------------------------------------------------------------------------------------


def duckdb_case(data_dir: Path) -> Case:
    import duckdb

    conn = duckdb.connect(str(data_dir / "numbers.duckdb"))
    try:
        conn.execute("CREATE TABLE numbers (n INTEGER)")
        conn.executemany("INSERT INTO numbers VALUES (?)", [(n,) for n in NUMBERS])
    finally:
        conn.close()
    outside = [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "COPY numbers TO 'stolen.csv'",
        "ATTACH 'other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
    ]
    return Case(
        name="duckdb",
        target={"connection_string": "numbers.duckdb"},
        slow_query="SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range + b.range = 7",
        refused_by_parser=WRITES + outside,
        refused_by_database=WRITES + outside,
        types={
            **COMMON_TYPES,
            "n_big": ("9007199254740993::BIGINT", "9007199254740993"),
            "n_huge": ("1267650600228229401496703205376::HUGEINT", "1267650600228229401496703205376"),
            "n_ubig": ("18446744073709551615::UBIGINT", "18446744073709551615"),
            "n_neg_big": ("-9007199254740993::BIGINT", "-9007199254740993"),
            "n_safe": ("9007199254740991::BIGINT", 9007199254740991),
            "n_bignum": ("42::BIGNUM", 42),
            "n_bignum_big": ("1267650600228229401496703205376::BIGNUM", "1267650600228229401496703205376"),
            "n_float": ("1.5::DOUBLE", 1.5),
            "n_nan": ("'nan'::DOUBLE", None),
            "n_inf": ("'inf'::DOUBLE", None),
            "n_ninf": ("'-inf'::FLOAT", None),
            "n_dec": ("12.50::DECIMAL(10,2)", "12.50"),
            "n_dec_wide": ("12345678901234567890.123456789::DECIMAL(38,9)", "12345678901234567890.123456789"),
            "yes": ("true", True),
            "b_blob": ("'\\x00\\xFF'::BLOB", {"$base64": "AP8="}),
            "b_empty": ("''::BLOB", {"$base64": ""}),
            "d_day": ("DATE '2024-02-29'", "2024-02-29"),
            # Infinities: the python client reads them as date.max / datetime.max (and .min), the
            # same as a real last (or first) day, which must stay a date.
            "d_inf": ("'infinity'::DATE", "infinity"),
            "d_ninf": ("'-infinity'::DATE", "-infinity"),
            "d_last": ("DATE '9999-12-31'", "9999-12-31"),
            "d_first": ("DATE '0001-01-01'", "0001-01-01"),
            "t_ts": ("TIMESTAMP '2024-02-29 13:14:15.5'", "2024-02-29T13:14:15.500000"),
            "t_inf": ("'infinity'::TIMESTAMP", "infinity"),
            "t_ninf": ("'-infinity'::TIMESTAMP", "-infinity"),
            "t_last": ("TIMESTAMP '9999-12-31 23:59:59.999999'", "9999-12-31T23:59:59.999999"),
            "t_first": ("TIMESTAMP '0001-01-01 00:00:00'", "0001-01-01T00:00:00"),
            "t_tz": ("TIMESTAMPTZ '2024-02-29 13:14:15+02'", same_instant("2024-02-29T13:14:15+02:00")),
            "t_tz_inf": ("'infinity'::TIMESTAMPTZ", "infinity"),
            "t_tz_ninf": ("'-infinity'::TIMESTAMPTZ", "-infinity"),
            "t_ns_inf": ("'infinity'::TIMESTAMP_NS", "infinity"),
            "t_ms_ninf": ("'-infinity'::TIMESTAMP_MS", "-infinity"),
            "t_s_inf": ("'infinity'::TIMESTAMP_S", "infinity"),
            "t_ns": ("TIMESTAMP_NS '2024-02-29 13:14:15.123456'", "2024-02-29T13:14:15.123456"),
            "l_days": ("['infinity'::DATE, DATE '9999-12-31', NULL]", ["infinity", "9999-12-31", None]),
            "t_clock": ("TIME '13:14:15'", "13:14:15"),
            "t_clock_frac": ("TIME '13:14:15.5'", "13:14:15.500000"),
            # 24:00:00 is a TIME that Python cannot hold: DuckDB's own text.
            "t_clock_end": ("'24:00:00'::TIME", "24:00:00"),
            "t_clock_tz": ("TIMETZ '13:14:15+02'", "13:14:15+02:00"),
            "i_span": ("INTERVAL '1 day 2 hours 3.5 seconds'", "P1DT2H3.5S"),
            "u_id": (f"'{UUID}'::UUID", UUID),
            "j_doc": ("'{\"a\": [1, 2]}'::JSON", DOC),
            "j_docs": ("['{\"a\": [1, 2]}'::JSON]", [DOC]),
            "l_list": ("[1, 2, 3]", [1, 2, 3]),
            "l_fixed": ("[1, 2]::INTEGER[2]", [1, 2]),
            "l_nested": ("[[1], [], NULL]", [[1], [], None]),
            "st_struct": ("{'x': 1, 'y': 'z'}", {"x": 1, "y": "z"}),
            "st_deep": ("{'when': ['infinity'::DATE], 'big': 9007199254740993::BIGINT}", {"when": ["infinity"], "big": "9007199254740993"}),
            "m_map": ("MAP {'k': 1}", {"k": 1}),
            # Keys that are not text: as object keys they would turn into text (or could not be
            # keys at all), so such a map is a list of key/value objects, in the map's order.
            "m_pairs": ("MAP {1: 'a', 2: 'b'}", [{"key": 1, "value": "a"}, {"key": 2, "value": "b"}]),
            "m_list_keys": ("MAP {[1, 2]: 'x'}", [{"key": [1, 2], "value": "x"}]),
            "m_struct_keys": ("MAP {{'x': 1}: DATE '2024-02-29'}", [{"key": {"x": 1}, "value": "2024-02-29"}]),
            "m_in_list": ("[MAP {1: 2}]", [[{"key": 1, "value": 2}]]),
            "m_in_map": ("MAP {'k': MAP {1: 2}}", {"k": [{"key": 1, "value": 2}]}),
            "e_enum": ("'b'::ENUM('a', 'b')", "b"),
        },
        column_types={
            "n_int": "INTEGER",
            "n_huge": "HUGEINT",
            "n_ubig": "UBIGINT",
            "n_bignum": "BIGNUM",
            "n_dec": "DECIMAL(10,2)",
            "st_struct": "STRUCT(x INTEGER, y VARCHAR)",
            "t_tz": "TIMESTAMP WITH TIME ZONE",
            "t_ns_inf": "TIMESTAMP_NS",
            "t_clock": "TIME",
            "t_clock_tz": "TIME WITH TIME ZONE",
            "j_doc": "JSON",
            "m_pairs": "MAP(INTEGER, VARCHAR)",
        },
    )


# -- MySQL / MariaDB ----------------------------------------------------------------------------------


def mysql_tables(url: str) -> None:
    """(Re)create the suite's tables in the MySQL database of `url`."""
    database = url.rsplit("/", 1)[-1]
    with mysql_admin(database) as conn, conn.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS numbers, dialect_types, zero_dates, sneaky")
        cursor.execute("CREATE TABLE numbers (n INTEGER)")
        cursor.executemany("INSERT INTO numbers VALUES (%s)", [(n,) for n in NUMBERS])
        cursor.execute("CREATE TABLE dialect_types (bits BIT(3), doc JSON)")
        cursor.execute("INSERT INTO dialect_types VALUES (b'101', '{\"a\": [1, 2]}')")
        # Legacy data: zero dates, allowed by an empty sql_mode.
        cursor.execute("SET SESSION sql_mode = ''")
        cursor.execute("CREATE TABLE zero_dates (n INTEGER, d DATETIME, dd DATE)")
        cursor.execute("INSERT INTO zero_dates VALUES (1, '2024-01-02 03:04:05', '2024-01-02'), (2, '0000-00-00', '0000-00-00')")


def mysql_case(url: str) -> Case:
    return Case(
        name="mysql",
        target={"connection_string": url},
        slow_query="SELECT SLEEP(5)",
        refused_by_parser=WRITES
        + [
            "SELECT n FROM numbers INTO OUTFILE '/tmp/sqla_dialects_numbers.txt'",
            "SELECT n FROM numbers INTO DUMPFILE '/tmp/sqla_dialects_numbers.bin'",
            "SELECT LOAD_FILE('/etc/passwd')",
            "SELECT GET_LOCK('sqla_dialects', 0)",
            "SET SESSION TRANSACTION READ WRITE",
        ],
        refused_by_database=WRITES + ["CREATE TEMPORARY TABLE sneaky (i INTEGER)"],
        types={
            **COMMON_TYPES,
            "n_ubig": ("CAST(18446744073709551615 AS UNSIGNED)", "18446744073709551615"),
            "n_neg_big": ("CAST(-9007199254740993 AS SIGNED)", "-9007199254740993"),
            "n_float": ("CAST(1.5 AS DOUBLE)", 1.5),
            "n_dec": ("CAST(12.5 AS DECIMAL(10,2))", "12.50"),
            "n_dec_wide": ("CAST(12345678901234567890.123456789 AS DECIMAL(38,9))", "12345678901234567890.123456789"),
            "yes": ("TRUE", 1),
            "b_blob": ("x'00ff'", {"$base64": "AP8="}),
            "d_day": ("DATE '2024-02-29'", "2024-02-29"),
            "t_ts": ("TIMESTAMP '2024-02-29 13:14:15.5'", "2024-02-29T13:14:15.500000"),
            # TIME is a clock reading, also of elapsed time (-838:59:59 to 838:59:59): it comes
            # back as the server shows it, hours past 23 and a minus sign included, never as a
            # duration. Not the literal TIME '...': the canonical SQL writes it as
            # CAST(... AS TIME), which MySQL reads as TIME(0) and rounds.
            "t_clock": ("CAST('13:14:15' AS TIME)", "13:14:15"),
            "t_clock_past_a_day": ("CAST('26:00:03.5' AS TIME(1))", "26:00:03.500000"),
            "t_clock_negative": ("CAST('-838:59:59' AS TIME)", "-838:59:59"),
            "t_clock_under_a_second": ("CAST('-00:00:00.5' AS TIME(1))", "-00:00:00.500000"),
            "j_doc": ("JSON_OBJECT('a', JSON_ARRAY(1, 2))", json_document(DOC)),
            "j_column": ("doc", json_document(DOC)),
            # Read from the table: MariaDB turns BIT in a scalar subquery into decimal text.
            "bits": ("bits", 5),
        },
        column_types={"n_int": "INT", "n_big": "BIGINT", "n_dec": "DECIMAL", "d_day": "DATE", "t_clock": "TIME", "bits": "BIT"},
        types_from="dialect_types",
    )


# -- PostgreSQL ---------------------------------------------------------------------------------------


def postgresql_tables(url: str) -> None:
    """(Re)create the suite's tables in the PostgreSQL database of `url`."""
    database = url.rsplit("/", 1)[-1]
    with postgresql_admin(database) as conn:
        conn.execute("DROP TABLE IF EXISTS numbers, sneaky")
        conn.execute("CREATE TABLE numbers (n INTEGER)")
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO numbers VALUES (%s)", [(n,) for n in NUMBERS])


def postgresql_case(url: str) -> Case:
    return Case(
        name="postgresql",
        target={"connection_string": url},
        slow_query="SELECT pg_sleep(5)",
        refused_by_parser=WRITES
        + [
            "WITH d AS (DELETE FROM numbers RETURNING n) SELECT n FROM d",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT lo_import('/etc/passwd')",
            "SELECT pg_advisory_lock(1)",
            "SELECT nextval('some_sequence')",
            "SELECT pg_terminate_backend(1)",
            "SELECT * FROM dblink('host=elsewhere', 'SELECT 1') AS t(i int)",
            "SET default_transaction_read_only = off",
        ],
        refused_by_database=WRITES
        + [
            "WITH d AS (DELETE FROM numbers RETURNING n) SELECT n FROM d",
            "CREATE TEMPORARY TABLE sneaky (i INTEGER)",
        ],
        types={
            **COMMON_TYPES,
            "n_big": ("9007199254740993::int8", "9007199254740993"),
            "n_neg_big": ("(-9007199254740993)::int8", "-9007199254740993"),
            "n_float": ("1.5::float8", 1.5),
            "n_fnan": ("'NaN'::float8", None),
            "n_inf": ("'Infinity'::float8", None),
            "n_ninf": ("'-Infinity'::float4", None),
            "n_dec": ("12.50::numeric", "12.50"),
            "n_dec_wide": ("12345678901234567890.123456789::numeric", "12345678901234567890.123456789"),
            "n_nan": ("'NaN'::numeric", None),
            "n_dinf": ("'Infinity'::numeric", None),
            "yes": ("true", True),
            "b_blob": ("'\\x00ff'::bytea", {"$base64": "AP8="}),
            "b_empty": ("''::bytea", {"$base64": ""}),
            "d_day": ("DATE '2024-02-29'", "2024-02-29"),
            "t_ts": ("TIMESTAMP '2024-02-29 13:14:15.5'", "2024-02-29T13:14:15.500000"),
            "t_tz": ("TIMESTAMPTZ '2024-02-29 13:14:15+02'", same_instant("2024-02-29T13:14:15+02:00")),
            "t_clock": ("TIME '13:14:15'", "13:14:15"),
            "t_clock_frac": ("TIME '13:14:15.5'", "13:14:15.500000"),
            "t_clock_tz": ("'13:14:15+02'::timetz", "13:14:15+02:00"),
            "i_span": ("INTERVAL '1 day 2 hours 3.5 seconds'", "P1DT2H3.5S"),
            "u_id": (f"'{UUID}'::uuid", UUID),
            "a_inet": ("'192.168.0.1/24'::inet", "192.168.0.1/24"),
            "a_cidr": ("'10.0.0.0/8'::cidr", "10.0.0.0/8"),
            "j_json": ("'{\"a\": [1, 2]}'::json", DOC),
            "j_jsonb": ("'{\"a\": [1, 2]}'::jsonb", DOC),
            "j_scalars": ("'[1, \"a\", null, 9007199254740993]'::jsonb", [1, "a", None, "9007199254740993"]),
            "l_ints": ("ARRAY[1, 2, 3]", [1, 2, 3]),
            "l_texts": ("ARRAY['a', NULL]::text[]", ["a", None]),
            "l_nums": ("ARRAY[1.5, 2.25]::numeric[]", ["1.5", "2.25"]),
            "l_grid": ("'{{1,2},{3,4}}'::int[]", [[1, 2], [3, 4]]),
            "l_bytes": ("ARRAY['\\x00ff'::bytea]", [{"$base64": "AP8="}]),
            "l_uuids": (f"ARRAY['{UUID}'::uuid]", [UUID]),
        },
        column_types={
            "n_int": "int4",
            "n_big": "int8",
            "n_dec": "numeric",
            "t_tz": "timestamptz",
            "t_clock": "time",
            "t_clock_tz": "timetz",
            "i_span": "interval",
            "a_inet": "inet",
            "b_blob": "bytea",
            "u_id": "uuid",
            "j_jsonb": "jsonb",
            "l_ints": "int4[]",
            "l_texts": "text[]",
        },
    )
