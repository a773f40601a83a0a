"""The JSON type contract (README, "JSON types") as kinds of value with the JSON each must become.

A plugin's `Database.types` maps the kinds its database has to an SQL expression that makes
the value named here; the kit checks that the task's output holds exactly the JSON given.
Kinds a database lacks are left out (SQLite has no decimal type, MariaDB no arrays). Values
that belong to one database only go in `Database.extra_types` with their own expectation.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["KINDS", "Kind", "alias", "json_document", "same_instant"]

UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
DOC = {"a": [1, 2]}


def same_instant(expected: str) -> Callable[[Any], bool]:
    """An ISO 8601 string with an offset, naming the same instant as `expected`."""

    def check(value: Any) -> bool:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return False
        return parsed.tzinfo is not None and parsed == dt.datetime.fromisoformat(expected)

    check.__name__ = f"same_instant({expected})"
    return check


def json_document(expected: Any) -> Callable[[Any], bool]:
    """The document itself, or (MariaDB, whose JSON is text on the wire) its text."""

    def check(value: Any) -> bool:
        if value == expected:
            return True
        try:
            return isinstance(value, str) and json.loads(value) == expected
        except ValueError:
            return False

    check.__name__ = f"json_document({expected!r})"
    return check


@dataclass(frozen=True)
class Kind:
    """One row of the README's table, as one value: what the SQL must make, and its JSON."""

    name: str
    #: The value the plugin's SQL expression must produce, in words.
    value: str
    #: The JSON it must come back as, or a predicate on it.
    expected: Any

    def matches(self, got: Any) -> bool:
        return matches(self.expected, got)


def matches(expected: Any, got: Any) -> bool:
    """`got` is `expected` (same JSON type, same value), or passes `expected` as a predicate."""
    if callable(expected):
        return bool(expected(got))
    return _same(expected, got)


def _same(expected: Any, got: Any) -> bool:
    # 1 == True and 1 == 1.0 in Python; in JSON they are different values.
    if type(expected) is not type(got):
        return False
    if isinstance(expected, dict):
        return expected.keys() == got.keys() and all(_same(v, got[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return len(expected) == len(got) and all(_same(a, b) for a, b in zip(expected, got))
    return expected == got


def alias(name: str) -> str:
    """The column alias the kit gives a kind or an extra type: its name as an identifier."""
    return "k_" + "".join(c if c.isalnum() else "_" for c in name.lower())


_KINDS = [
    Kind("null", "NULL", None),
    Kind("boolean", "true", True),
    Kind("integer", "42", 42),
    Kind("safe integer", "9007199254740991 (2^53 - 1) as a 64-bit integer", 9007199254740991),
    Kind("big integer", "9007199254740993 (2^53 + 1) as a 64-bit integer", "9007199254740993"),
    Kind("negative big integer", "-9007199254740993 as a 64-bit integer", "-9007199254740993"),
    Kind("unsigned big integer", "18446744073709551615 (2^64 - 1), unsigned", "18446744073709551615"),
    Kind("huge integer", "1267650600228229401496703205376 (2^100), a 128-bit integer", "1267650600228229401496703205376"),
    Kind("float", "1.5 as a double", 1.5),
    Kind("float nan", "NaN as a float", None),
    Kind("float infinity", "+Infinity as a float", None),
    Kind("float negative infinity", "-Infinity as a float", None),
    Kind("decimal", "12.50 as DECIMAL/NUMERIC with scale 2", "12.50"),
    Kind("wide decimal", "12345678901234567890.123456789 as DECIMAL(38, 9) or NUMERIC", "12345678901234567890.123456789"),
    Kind("decimal nan", "NaN as NUMERIC", None),
    Kind("decimal infinity", "Infinity as NUMERIC", None),
    Kind("text", "the text 'héllo'", "héllo"),
    Kind("bytes", "the two bytes 00 ff", {"$base64": "AP8="}),
    Kind("empty bytes", "zero bytes", {"$base64": ""}),
    Kind("date", "the date 2024-02-29", "2024-02-29"),
    Kind("last date", "the date 9999-12-31 (a real day, not infinity)", "9999-12-31"),
    Kind("infinite date", "the date 'infinity'", "infinity"),
    Kind("negative infinite date", "the date '-infinity'", "-infinity"),
    Kind("timestamp", "the timestamp 2024-02-29 13:14:15.5 without a time zone", "2024-02-29T13:14:15.500000"),
    Kind("infinite timestamp", "the timestamp 'infinity'", "infinity"),
    Kind("negative infinite timestamp", "the timestamp '-infinity'", "-infinity"),
    Kind(
        "timestamp with time zone",
        "the instant 2024-02-29 13:14:15+02 as a timestamp with time zone",
        same_instant("2024-02-29T13:14:15+02:00"),
    ),
    Kind("time", "the time of day 13:14:15", "13:14:15"),
    Kind("time with fraction", "the time of day 13:14:15.5", "13:14:15.500000"),
    Kind("time with time zone", "the time of day 13:14:15 at offset +02", "13:14:15+02:00"),
    Kind("interval", "1 day 2 hours 3.5 seconds as an interval", "P1DT2H3.5S"),
    Kind("uuid", f"the UUID {UUID}", UUID),
    Kind("network address", "the address 192.168.0.1/24 (inet)", "192.168.0.1/24"),
    Kind("network", "the network 10.0.0.0/8 (cidr)", "10.0.0.0/8"),
    Kind("json", 'the JSON document {"a": [1, 2]} of a JSON type', DOC),
    Kind("json scalars", 'the JSON document [1, "a", null, 9007199254740993]', [1, "a", None, "9007199254740993"]),
    Kind("array", "the array of integers 1, 2, 3", [1, 2, 3]),
    Kind("array with null", "the array of text 'a', NULL", ["a", None]),
    Kind("array of arrays", "the two-by-two array of integers 1, 2 / 3, 4", [[1, 2], [3, 4]]),
    Kind("array of decimals", "the array of decimals 1.5, 2.25", ["1.5", "2.25"]),
    Kind("array of bytes", "an array holding the two bytes 00 ff", [{"$base64": "AP8="}]),
    Kind("struct", "a struct or row with fields x = 1, y = 'z'", {"x": 1, "y": "z"}),
    Kind("map with text keys", "a map of the text key 'k' to 1", {"k": 1}),
    Kind(
        "map with other keys",
        "a map of integer keys 1 -> 'a', 2 -> 'b'",
        [{"key": 1, "value": "a"}, {"key": 2, "value": "b"}],
    ),
    Kind("enum", "the value 'b' of an enum type ('a', 'b')", "b"),
]

#: Every kind, by name.
KINDS: dict[str, Kind] = {kind.name: kind for kind in _KINDS}
