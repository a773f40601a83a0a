"""Properties over generated inputs: the JSON contract for any value a driver can return, and
the read-only guarantee for any write, however it is disguised.

The contract is the table in `sqladapter/jsontypes.py`; each property below checks one row of
it by turning the JSON back into the original value where that is possible (digits, base64,
ISO 8601) rather than by restating the converter.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import re
import sqlite3
import uuid

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from security_databases import exclusive_use, make_target, plugin_installed
from servers import REQUIRE_SERVERS, server_unavailable

from sqladapter import Runtime, SqlAdapterError
from sqladapter.jsontypes import MAX_SAFE_INTEGER, checked_converter, converter_for, to_json
from sqladapter.settings import Settings
from sqladapter.testing.hostile import make_outside

# -- values a driver can hand back ---------------------------------------------------------------

# Offsets in whole seconds: what databases store (historical local mean times have seconds).
timezones = st.one_of(
    st.none(), st.integers(min_value=-86_399, max_value=86_399).map(lambda s: dt.timezone(dt.timedelta(seconds=s)))
)
datetimes = st.datetimes(timezones=timezones)
times = st.times(timezones=timezones)
decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.decimals(places=4, allow_nan=False)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**128), max_value=2**128),
    st.floats(),
    decimals,
    st.text(),
    st.binary(),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
    datetimes,
    st.dates(),
    times,
    st.timedeltas(),
    st.uuids(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    # Keys that are not strings become their text; distinct texts keep every entry.
    | st.dictionaries(st.integers(), inner, max_size=4),
    max_leaves=12,
)

_DURATION = re.compile(r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.(\d{1,6}))?S)?)?$")


def _parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text)
    assert match and text not in ("P", "-P", "PT", "-PT"), f"not an ISO 8601 duration: {text!r}"
    sign, days, hours, minutes, seconds, fraction = match.groups()
    value = dt.timedelta(
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=int(seconds or 0),
        microseconds=int((fraction or "").ljust(6, "0") or 0),
    )
    return -value if sign else value


def assert_follows_contract(value, out) -> None:
    """`out` is what the contract says `value` becomes."""
    if value is None or isinstance(value, (bool, str)):
        assert out == value and type(out) is type(value)
    elif isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            assert out == value and type(out) is int
        else:
            assert isinstance(out, str) and int(out) == value and out == str(value)
    elif isinstance(value, float):
        assert (out is None) if not math.isfinite(value) else (out == value and type(out) is float)
    elif isinstance(value, decimal.Decimal):
        if not value.is_finite():
            assert out is None
        else:
            assert isinstance(out, str) and "E" not in out.upper() and decimal.Decimal(out) == value
            if value.as_tuple().exponent < 0:  # the scale is kept: "12.50" stays "12.50"
                assert len(out.partition(".")[2]) == -value.as_tuple().exponent
    elif isinstance(value, (bytes, bytearray, memoryview)):
        assert set(out) == {"$base64"} and base64.b64decode(out["$base64"], validate=True) == bytes(value)
    elif isinstance(value, dt.datetime):
        parsed = dt.datetime.fromisoformat(out)
        assert parsed == value and parsed.utcoffset() == value.utcoffset()
    elif isinstance(value, dt.date):
        assert dt.date.fromisoformat(out) == value
    elif isinstance(value, dt.time):
        parsed = dt.time.fromisoformat(out)
        assert parsed == value and parsed.utcoffset() == value.utcoffset()
    elif isinstance(value, dt.timedelta):
        assert _parse_duration(out) == value
    elif isinstance(value, uuid.UUID):
        assert uuid.UUID(out) == value and out == str(value)
    elif isinstance(value, dict):
        assert isinstance(out, dict) and list(out) == [str(k) for k in value]
        for key, item in value.items():
            assert_follows_contract(item, out[str(key)])
    elif isinstance(value, (list, tuple)):
        assert isinstance(out, list) and len(out) == len(value)
        for item, converted in zip(value, out):
            assert_follows_contract(item, converted)
    else:
        assert out == str(value)


def assert_strict_json(out) -> None:
    """Serializable by the strictest encoders: no NaN, no Infinity, no Python-only types."""
    json.dumps(out, allow_nan=False)
    orjson.dumps(out)


@settings(max_examples=1500, deadline=None)
@given(values)
def test_every_value_becomes_strict_json_by_the_contract(value):
    out = to_json(value)
    assert_strict_json(out)
    assert_follows_contract(value, out)


@settings(max_examples=500, deadline=None)
@given(scalars, st.lists(scalars, max_size=8))
def test_an_untyped_column_converts_each_value_by_its_own_type(sample, column):
    # SQLite columns hold any type row by row: the converter chosen from the first value must
    # still convert every other value by the contract.
    convert = checked_converter(sample)
    for value in [sample, *column]:
        out = None if value is None else convert(value)
        assert_strict_json(out)
        assert_follows_contract(value, out)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_typed_column_converter_matches_the_contract(data):
    sample = data.draw(scalars.filter(lambda v: v is not None))
    same_type = st.from_type(type(sample)) if type(sample) in (bool, str, int, float) else st.just(sample)
    column = data.draw(st.lists(same_type, max_size=8))
    convert = converter_for(sample)
    for value in [sample, *column]:
        out = value if convert is None else convert(value)
        assert_follows_contract(value, out)


class _Odd:
    def __str__(self) -> str:
        return "odd value"


def test_a_type_outside_the_table_becomes_its_text():
    assert to_json(_Odd()) == "odd value"
    assert to_json([_Odd(), {"k": _Odd()}]) == ["odd value", {"k": "odd value"}]


# -- the same contract through a real database ----------------------------------------------------

sqlite_rows = st.lists(
    st.tuples(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False),
        st.text().filter(lambda s: "\x00" not in s),
        st.binary(),
        st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False), st.text(), st.binary(), st.none()),
    ),
    min_size=1,
    max_size=20,
)


@pytest.fixture(scope="module")
def sqlite_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("property-data")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=sqlite_rows)
def test_generated_sqlite_rows_come_out_by_the_contract(sqlite_dir, rows):
    # A new file each time: a pooled connection keeps reading the file it opened.
    name = f"generated-{uuid.uuid4().hex}.db"
    path = sqlite_dir / name
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE g (k INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, v)")
        conn.executemany("INSERT INTO g VALUES (?, ?, ?, ?, ?, ?)", [(k, *row) for k, row in enumerate(rows)])
    conn.close()
    with Runtime(Settings.from_env({"SQLADAPTER_DATA_DIR": str(sqlite_dir)})) as runtime:
        out = runtime.run(connection_string=name, query="SELECT i, r, t, b, v FROM g ORDER BY k", shape="arrays")
    assert_strict_json(out)
    assert out["rowCount"] == len(rows)
    for row, got in zip(rows, out["rows"]):
        for value, converted in zip(row, got):
            assert_follows_contract(value, converted)


# -- writes in disguise never reach the database -------------------------------------------------

WRITES = {
    "common": [
        ["DELETE", "FROM", "people"],
        ["DELETE", "FROM", "people", "WHERE", "1", "=", "1"],
        ["UPDATE", "people", "SET", "name", "=", "'x'"],
        ["INSERT", "INTO", "people", "(name, surname, birth_date, zip_code)", "VALUES", "('a', 'b', 'c', 'd')"],
        ["INSERT", "INTO", "people", "SELECT", "*", "FROM", "people"],
        ["DROP", "TABLE", "people"],
        ["DROP", "TABLE", "IF", "EXISTS", "audit"],
        ["CREATE", "TABLE", "evil", "(a INT)"],
        ["CREATE", "TABLE", "evil", "AS", "SELECT", "*", "FROM", "people"],
        ["CREATE", "INDEX", "evil_i", "ON", "people", "(name)"],
        ["CREATE", "VIEW", "evil_v", "AS", "SELECT", "1", "AS", "a"],
        ["ALTER", "TABLE", "people", "ADD", "COLUMN", "evil", "INT"],
        ["ALTER", "TABLE", "audit", "RENAME", "TO", "audit_old"],
    ],
    "sqlite": [
        ["REPLACE", "INTO", "people", "(name, surname, birth_date, zip_code)", "VALUES", "('a', 'b', 'c', 'd')"],
        ["PRAGMA", "user_version", "=", "7"],
        ["VACUUM"],
        ["ATTACH", "':memory:'", "AS", "m"],
    ],
    "duckdb": [
        ["TRUNCATE", "people"],
        ["CHECKPOINT"],
        ["CREATE", "SEQUENCE", "evil_s"],
        ["SET", "memory_limit", "=", "'1GB'"],
    ],
    "mysql": [
        ["TRUNCATE", "TABLE", "people"],
        ["REPLACE", "INTO", "people", "(name, surname, birth_date, zip_code)", "VALUES", "('a', 'b', 'c', 'd')"],
        ["RENAME", "TABLE", "audit", "TO", "audit_old"],
        ["SET", "SESSION", "TRANSACTION", "READ", "WRITE"],
    ],
    "postgresql": [
        ["TRUNCATE", "people"],
        ["SELECT", "nextval('sqla_seq')"],
        ["SELECT", "setval('sqla_seq',", "99)"],
        ["SELECT", "*", "INTO", "evil", "FROM", "people"],
        ["SET", "default_transaction_read_only", "=", "off"],
    ],
}
# Ways to write "nothing here" between two tokens.
SEPARATORS = [" ", "  ", "\t", "\n", "\r\n", "/**/", "/* x */", " /* ; */ ", " -- c\n", "\n\t "]
WRAPPERS = [
    "{w}",
    "{w};",
    " {w} ;  ",
    "SELECT 1;{s}{w}",
    "SELECT * FROM people;{s}{w};{s}--",
    "{w};{s}SELECT 1",
    "WITH x AS (SELECT 1){s}{w}",
    "EXPLAIN{s}{w}",
    "EXPLAIN ANALYZE{s}{w}",
    "/* report */{s}{w}",
    "-- report\n{w}",
    "SELECT 'a;b';{s}{w}",
]
CTE_WRAPPERS = ["WITH d AS ({w} RETURNING *){s}SELECT * FROM d", "EXPLAIN ANALYZE WITH d AS ({w} RETURNING *) SELECT 1"]


def _case(word: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if flip else c for c, flip in zip(word, flips + [False] * len(word)))


@st.composite
def disguised_writes(draw, dialect: str) -> str:
    tokens = draw(st.sampled_from(WRITES["common"] + WRITES[dialect]))
    separators = SEPARATORS + (["#x\n"] if dialect == "mysql" else [])
    parts = []
    for index, token in enumerate(tokens):
        if index:
            parts.append(draw(st.sampled_from(separators)))
        word = token.lower() if draw(st.booleans()) else token
        parts.append(_case(word, draw(st.lists(st.booleans(), max_size=len(word)))))
    write = "".join(parts)
    wrappers = WRAPPERS + (CTE_WRAPPERS if dialect == "postgresql" and tokens[0] in ("DELETE", "UPDATE", "INSERT") else [])
    wrapper = draw(st.sampled_from(wrappers))
    return wrapper.replace("{s}", draw(st.sampled_from(separators))).replace("{w}", write)


@pytest.fixture(scope="module")
def write_targets(tmp_path_factory):
    outside = make_outside()
    data_dir = tmp_path_factory.mktemp("property-writes")
    made: dict = {}

    def get(dialect: str):
        if dialect not in made:
            if not plugin_installed(dialect):
                made[dialect] = f"the {dialect} plugin is not installed"
            else:
                try:
                    made[dialect] = make_target(dialect, data_dir, outside)
                except Exception as exc:
                    made[dialect] = f"{dialect} server unavailable: {type(exc).__name__}: {exc}"
        target = made[dialect]
        if isinstance(target, str):
            if dialect in ("mysql", "postgresql") or REQUIRE_SERVERS:
                server_unavailable(target)
            pytest.skip(target)
        return target

    with exclusive_use():
        yield get
    for target in made.values():
        if not isinstance(target, str):
            target.close()
    outside.remove()


def _write_property(dialect: str, examples: int):
    @pytest.mark.servers
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def test(write_targets, data):
        target = write_targets(dialect)
        sql = data.draw(disguised_writes(dialect), label="query")
        assume(sql.strip())
        before = target.snapshot()
        try:
            output = target.run(query=sql, timeout_ms=5000)
        except SqlAdapterError as exc:
            assert not exc.retryable, f"{sql!r}: {type(exc).__name__}: {exc.message}"
        else:
            pytest.fail(f"{sql!r} ran on {dialect} and returned {output}")
        assert target.snapshot() == before, f"{sql!r} changed the {dialect} database"

    test.__name__ = f"test_no_disguised_write_reaches_{dialect}"
    return test


test_no_disguised_write_reaches_sqlite = _write_property("sqlite", 400)
test_no_disguised_write_reaches_duckdb = _write_property("duckdb", 250)
test_no_disguised_write_reaches_mysql = _write_property("mysql", 150)
test_no_disguised_write_reaches_postgresql = _write_property("postgresql", 150)
