"""The JSON type contract, value by value: through SQLite for what SQLite returns, and for every
Python type a driver hands back."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import sqlite3
import uuid

import pytest

from sqladapter import QueryError, run_query
from sqladapter.jsontypes import (
    MAX_SAFE_INTEGER,
    UnsupportedTypeError,
    checked_converter,
    clock,
    converter_for,
    duration,
    json_value,
    to_json,
    untyped_column,
)


@pytest.fixture
def types_db(data_dir):
    with sqlite3.connect(data_dir / "types.db") as conn:
        conn.execute("CREATE TABLE t (label TEXT, i INTEGER, r REAL, s TEXT, b BLOB, j JSON, d DATE, ts TIMESTAMP)")
        conn.execute(
            "INSERT INTO t VALUES ('a', ?, ?, ?, ?, ?, ?, ?)",
            (MAX_SAFE_INTEGER + 2, 1.5, "héllo", b"\x00\xff", '{"k": [1, 2.5, null]}', "1990-01-01", "2024-05-06T07:08:09+02:00"),
        )
        conn.execute(
            "INSERT INTO t VALUES ('b', ?, ?, ?, ?, ?, ?, ?)",
            (-MAX_SAFE_INTEGER, float("inf"), None, b"", "not json", "2008-02-29", "2024-05-06 07:08:09"),
        )
    return "types.db"


def test_every_sqlite_value_follows_the_contract(types_db):
    out = run_query(connection_string=types_db, query="SELECT * FROM t ORDER BY label")
    a, b = out["rows"]
    assert a["i"] == str(MAX_SAFE_INTEGER + 2)  # beyond 2^53: a string, digits exact
    assert b["i"] == -MAX_SAFE_INTEGER  # at the edge: still a number
    assert a["r"] == 1.5
    assert b["r"] is None  # Infinity has no JSON number
    assert a["s"] == "héllo" and b["s"] is None
    assert a["b"] == {"$base64": "AP8="} and b["b"] == {"$base64": ""}
    assert a["j"] == {"k": [1, 2.5, None]}  # a column declared JSON is parsed
    assert b["j"] == "not json"  # ... unless it does not hold JSON: then it stays text
    assert a["d"] == "1990-01-01" and b["d"] == "2008-02-29"
    assert a["ts"] == "2024-05-06T07:08:09+02:00" and b["ts"] == "2024-05-06 07:08:09"
    json.dumps(out, allow_nan=False)  # strict JSON, nothing left for a serializer to choke on


def test_sqlite_columns_may_mix_types_row_by_row(data_dir):
    with sqlite3.connect(data_dir / "mixed.db") as conn:
        conn.execute("CREATE TABLE m (v)")
        conn.executemany("INSERT INTO m VALUES (?)", [("text",), (2**60,), (b"\x01",), (None,), (0.25,)])
    out = run_query(connection_string="mixed.db", query="SELECT v FROM m ORDER BY rowid")
    assert [r["v"] for r in out["rows"]] == ["text", str(2**60), {"$base64": "AQ=="}, None, 0.25]


def test_nan_from_sqlite_is_null(data_dir):
    with sqlite3.connect(data_dir / "nan.db") as conn:
        conn.execute("CREATE TABLE n (x REAL)")
    out = run_query(connection_string="nan.db", query="SELECT 9e999 - 9e999 AS nan, -9e999 AS ninf")
    assert out["rows"] == [{"nan": None, "ninf": None}]


UTC2 = dt.timezone(dt.timedelta(hours=2))


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        (True, True),
        (0, 0),
        (MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
        (MAX_SAFE_INTEGER + 1, str(MAX_SAFE_INTEGER + 1)),
        (-(MAX_SAFE_INTEGER + 1), str(-(MAX_SAFE_INTEGER + 1))),
        (2**64, "18446744073709551616"),
        (1.25, 1.25),
        (float("nan"), None),
        (float("-inf"), None),
        (decimal.Decimal("12.50"), "12.50"),
        (decimal.Decimal("-0.000001"), "-0.000001"),
        (decimal.Decimal("1E+3"), "1000"),
        (decimal.Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
        (decimal.Decimal("NaN"), None),
        (decimal.Decimal("Infinity"), None),
        ("text", "text"),
        (b"\x00\x01", {"$base64": "AAE="}),
        (bytearray(b"ab"), {"$base64": "YWI="}),
        (memoryview(b"ab"), {"$base64": "YWI="}),
        (dt.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
        (dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC2), "2024-05-06T07:08:09.123456+02:00"),
        (dt.datetime(2024, 5, 6, tzinfo=dt.timezone.utc), "2024-05-06T00:00:00+00:00"),
        (dt.date(1990, 1, 1), "1990-01-01"),
        (dt.time(23, 59, 1), "23:59:01"),
        (dt.time(1, 2, tzinfo=UTC2), "01:02:00+02:00"),
        (dt.timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=500000), "P1DT2H3M4.5S"),
        (dt.timedelta(0), "PT0S"),
        (dt.timedelta(seconds=-90), "-PT1M30S"),
        (dt.timedelta(days=3), "P3D"),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (ipaddress.ip_address("192.168.0.1"), "192.168.0.1"),
        (ipaddress.ip_interface("192.168.0.1/24"), "192.168.0.1/24"),
        (ipaddress.ip_network("2001:db8::/32"), "2001:db8::/32"),
        ({"a": decimal.Decimal("1.0"), 2: [b"x", None]}, {"a": "1.0", "2": [{"$base64": "eA=="}, None]}),
        ((1, 2**60), [1, str(2**60)]),
    ],
)
def test_each_type_in_the_contract(value, expected):
    assert to_json(value) == expected
    assert json_value(value) == expected
    assert checked_converter(value)(value) == expected
    convert = converter_for(value)
    assert (value if convert is None else convert(value)) == expected


class Point:
    """A driver's own type, outside the contract."""

    def __str__(self):
        return "(1,2)"


def test_subclasses_follow_their_base():
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    assert json_value(Level.HIGH) == 3
    assert converter_for(Level.HIGH)(Level.HIGH) == 3


def test_a_column_of_a_type_outside_the_contract_fails_naming_the_column_and_type():
    # Its text ("(1,2)") would pass for an answer the contract never promised.
    with pytest.raises(QueryError) as caught:
        converter_for(Point(), "where", "point")
    error = caught.value
    assert isinstance(error, UnsupportedTypeError) and error.type == "query_error" and error.retryable is False
    assert "column 'where' (point)" in error.message and "test_jsontypes.Point" in error.message


def test_a_value_outside_the_contract_inside_an_array_or_object_names_its_column():
    for sample in ([1, Point()], {"k": [Point()]}, (Point(),)):
        convert = converter_for(sample, "nested", "point[]")
        with pytest.raises(UnsupportedTypeError) as caught:
            convert(sample)
        assert "column 'nested' (point[])" in caught.value.message


def test_a_row_of_a_type_outside_the_contract_fails_in_an_untyped_column_too():
    convert = checked_converter("text", "v")
    assert convert("text") == "text" and convert(2**60) == str(2**60)
    with pytest.raises(UnsupportedTypeError) as caught:
        convert(Point())
    assert "column 'v'" in caught.value.message
    with pytest.raises(UnsupportedTypeError):
        untyped_column(["text", Point()])
    with pytest.raises(UnsupportedTypeError):
        json_value([Point()])


def test_to_json_alone_describes_such_values_by_their_text():
    assert to_json(Point()) == "(1,2)"
    assert to_json([Point(), {"k": Point()}, 2**60]) == ["(1,2)", {"k": "(1,2)"}, str(2**60)]


@pytest.mark.parametrize(
    "value, expected",
    [
        (dt.timedelta(0), "00:00:00"),
        (dt.timedelta(hours=13, minutes=14, seconds=15), "13:14:15"),
        (dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=1), "23:59:59.000001"),
        (dt.timedelta(days=1, hours=2, seconds=3, microseconds=500000), "26:00:03.500000"),
        (dt.timedelta(hours=838, minutes=59, seconds=59), "838:59:59"),
        (-dt.timedelta(hours=838, minutes=59, seconds=59), "-838:59:59"),
        (-dt.timedelta(microseconds=500000), "-00:00:00.500000"),
        (-dt.timedelta(hours=1, minutes=2, seconds=3, microseconds=250000), "-01:02:03.250000"),
        # What PyMySQL hands back for a TIME it cannot read: the server's text.
        ("12:00:00.5x", "12:00:00.5x"),
    ],
)
def test_clock_is_the_time_as_the_server_shows_it(value, expected):
    assert clock(value) == expected


def test_duration_is_iso_8601():
    assert duration(dt.timedelta(hours=36)) == "P1DT12H"
    assert duration(dt.timedelta(microseconds=1)) == "PT0.000001S"
