"""The JSON type contract: how database values become JSON values.

| Python value from the driver | JSON |
|---|---|
| None | null |
| bool | true / false |
| int within +-(2^53-1) | number |
| int beyond +-(2^53-1) | string of its digits (JavaScript and many JSON parsers lose precision past 2^53) |
| float | number; NaN and +-Infinity as null (JSON has no such numbers) |
| Decimal | exact string, scale kept ("12.50"); NaN and Infinity as null |
| str | string |
| bytes, bytearray, memoryview | {"$base64": "..."} |
| datetime | ISO 8601 string; tz-aware keeps its offset |
| date, time | ISO 8601 string ("23:59:01", "23:59:01.500000", "01:02:00+02:00") |
| timedelta | ISO 8601 duration ("P1DT2H3M4.5S"); `clock` gives "HH:MM:SS" where it is a TIME of day |
| UUID | string |
| IPv4/IPv6 address, interface, network | string ("192.168.0.1/24") |
| dict | object (keys as strings, values by these rules) |
| list, tuple | array (values by these rules) |
| anything else | UnsupportedTypeError, a QueryError naming the column and the type |

A value of a type outside the table fails the query: a string made of its str() would look like
an answer while saying nothing the table promises. `to_json` alone, for callers that describe
values rather than return them, turns such values into their text.

Converters are picked once per column from its first non-null value, then applied to the
column's values; where a dialect's columns are not typed (SQLite), each converter checks the
value's type and falls back to the general rule.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import ipaddress
import itertools
import math
import uuid
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import QueryError

MAX_SAFE_INTEGER = 2**53 - 1

Converter = Callable[[Any], Any]


class UnsupportedTypeError(QueryError):
    """A database value of a type the contract has no JSON form for."""

    def __init__(self, kind: type, column: str | None = None, database_type: str | None = None):
        self.kind = kind
        self.column = column
        self.database_type = database_type
        python = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        where = "a column" if column is None else f"column {column!r}"
        if database_type:
            where += f" ({database_type})"
        super().__init__(
            f"{where} holds a value of type {python}, which has no JSON form in sqladapter's type "
            "contract (README, JSON types); convert it in the query to a type the table covers, "
            "such as text"
        )


def _int(value: int) -> int | str:
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _decimal(value: decimal.Decimal) -> str | None:
    return format(value, "f") if value.is_finite() else None


def _bytes(value: bytes | bytearray | memoryview) -> dict[str, str]:
    return {"$base64": base64.b64encode(value).decode("ascii")}


def _isoformat(value: dt.date | dt.time) -> str:
    return value.isoformat()


def duration(value: dt.timedelta) -> str:
    """ISO 8601 duration of a timedelta: days, hours, minutes, seconds; "-" before P if negative."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    days, rest = divmod(abs(micros), 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micro = divmod(rest, 1_000_000)
    out = f"{sign}P{days}D" if days else f"{sign}P"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or micro:
        clock += f"{seconds}.{micro:06d}".rstrip("0") + "S" if micro else f"{seconds}S"
    if clock:
        out += "T" + clock
    return out if out not in ("P", "-P") else "PT0S"


def clock(value: Any) -> Any:
    """A TIME value held as a timedelta (MySQL's TIME, -838:59:59 to 838:59:59) as the clock
    reading the database shows: "[-]HH:MM:SS", with ".ffffff" when there is a fraction.

    Any other value (a driver's text for a value it could not read) goes by the contract.
    """
    if not isinstance(value, dt.timedelta):
        return json_value(value)
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    seconds, micro = divmod(abs(micros), 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{sign}{hours:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{micro:06d}" if micro else text


def _str(value: uuid.UUID) -> str:
    return str(value)


def _dict(value: dict) -> dict[str, Any]:
    return {str(k): json_value(v) for k, v in value.items()}


def _list(value: list | tuple) -> list[Any]:
    return [json_value(v) for v in value]


def _identity(value: Any) -> Any:
    return value


_RULES: Mapping[type, Converter] = MappingProxyType(
    {
        type(None): _identity,
        bool: _identity,
        str: _identity,
        int: _int,
        float: _float,
        decimal.Decimal: _decimal,
        bytes: _bytes,
        bytearray: _bytes,
        memoryview: _bytes,
        dt.datetime: _isoformat,
        dt.date: _isoformat,
        dt.time: _isoformat,
        dt.timedelta: duration,
        uuid.UUID: _str,
        # psycopg's inet and cidr; their text is the address as PostgreSQL writes it.
        ipaddress.IPv4Address: _str,
        ipaddress.IPv6Address: _str,
        ipaddress.IPv4Interface: _str,
        ipaddress.IPv6Interface: _str,
        ipaddress.IPv4Network: _str,
        ipaddress.IPv6Network: _str,
        dict: _dict,
        list: _list,
        tuple: _list,
    }
)


def _rule(kind: type) -> Converter | None:
    """The contract's rule for values of `kind`; None: the contract has none."""
    rule = _RULES.get(kind)
    if rule is None:
        # Subclasses (an IntEnum, a driver's own datetime) follow their base class's rule.
        rule = next((_RULES[base] for base in kind.__mro__[1:] if base in _RULES), None)
    return rule


def json_value(value: Any) -> Any:
    """Convert one value by the contract; UnsupportedTypeError for a type outside it."""
    kind = type(value)
    rule = _RULES.get(kind) or _rule(kind)
    if rule is None:
        raise UnsupportedTypeError(kind)
    return rule(value)


def to_json(value: Any) -> Any:
    """Convert one value by the contract, types outside it as their text; never raises.

    For describing values (messages, logs). Result columns use `json_value` and the converters
    below, which refuse a type outside the contract instead.
    """
    try:
        return json_value(value)
    except UnsupportedTypeError:
        return _as_text(value)


def _as_text(value: Any) -> Any:
    rule = _rule(type(value))
    if rule is None:
        return str(value)
    if rule is _dict:
        return {str(k): _as_text(v) for k, v in value.items()}
    if rule is _list:
        return [_as_text(v) for v in value]
    return rule(value)


def named(convert: Converter, column: str | None, database_type: str | None = None) -> Converter:
    """`convert`, except that a value it finds no rule for fails naming the column and its type."""
    if column is None and database_type is None:
        return convert

    def run(value: Any) -> Any:
        try:
            return convert(value)
        except UnsupportedTypeError as exc:
            if exc.column is not None:
                raise
            raise UnsupportedTypeError(exc.kind, column, database_type) from None

    return run


# Rules that return JSON-native values unchanged for most inputs still need to see each value
# (range or finiteness checks), except these, which are the identity.
_IDENTITY_KINDS = (str, bool, type(None))


def converter_for(sample: Any, column: str | None = None, database_type: str | None = None) -> Converter | None:
    """The converter for a typed column whose first non-null value is `sample`; None: identity.

    `column` and `database_type` name the column in the error for a type outside the contract,
    raised here for the sample itself, or while converting for a value nested in it.
    """
    kind = type(sample)
    if kind in _IDENTITY_KINDS:
        return None
    rule = _rule(kind)
    if rule is None:
        raise UnsupportedTypeError(kind, column, database_type)
    if rule is _dict or rule is _list:
        return named(rule, column, database_type)
    return rule


def checked_converter(sample: Any, column: str | None = None, database_type: str | None = None) -> Converter:
    """The converter for an untyped column: fast for values like `sample`, correct for any."""
    kind = type(sample)
    rule = _rule(kind)
    if rule is None:
        raise UnsupportedTypeError(kind, column, database_type)
    other = named(json_value, column, database_type)
    if rule is _identity:

        def convert(value: Any) -> Any:
            return value if type(value) is kind or value is None else other(value)

    else:
        rule = named(rule, column, database_type) if rule is _dict or rule is _list else rule

        def convert(value: Any) -> Any:
            if type(value) is kind:
                return rule(value)
            return other(value)

    return convert


# -- whole columns ---------------------------------------------------------------------------
#
# A result is converted column by column. Where a column's values are JSON already (text,
# integers within the safe range, finite floats), C-level passes over the column prove it and
# nothing is copied; only columns that need a conversion pay a Python call per value.

_JSON_KINDS = frozenset({str, bool})


def _safe_ints(values: Sequence[Any]) -> bool:
    # filter(None, ...) drops None and 0, both JSON as they are.
    return -MAX_SAFE_INTEGER <= min(filter(None, values), default=0) and max(filter(None, values), default=0) <= MAX_SAFE_INTEGER


def _finite_floats(values: Sequence[Any]) -> bool:
    return all(map(math.isfinite, filter(None, values)))


def typed_column(values: Sequence[Any], convert: Converter | None) -> list[Any] | None:
    """A typed column's values with `convert` applied to the non-null ones; None: unchanged."""
    if convert is None:
        return None
    try:
        if convert is _int and _safe_ints(values) or convert is _float and _finite_floats(values):
            return None
    except (TypeError, OverflowError):  # not the one type the column was taken for
        pass
    return [None if value is None else convert(value) for value in values]


def all_json_kinds(rows: Iterable[Iterable[Any]]) -> bool:
    """Whether every value in `rows` is text, a boolean or null: JSON as it is, in one pass."""
    kinds = set(map(type, itertools.chain.from_iterable(rows)))
    kinds.discard(type(None))
    return kinds <= _JSON_KINDS


def untyped_column(values: Sequence[Any]) -> list[Any] | None:
    """A column whose values may differ in type row by row, each by the contract; None: unchanged."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if kinds <= _JSON_KINDS:
        return None
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is int and _safe_ints(values) or kind is float and _finite_floats(values):
            return None
    return list(map(json_value, values))


_TYPE_NAMES: Mapping[type, str] = MappingProxyType(
    {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "float",
        decimal.Decimal: "decimal",
        str: "text",
        bytes: "blob",
        bytearray: "blob",
        memoryview: "blob",
        dt.datetime: "timestamp",
        dt.date: "date",
        dt.time: "time",
        dt.timedelta: "interval",
        uuid.UUID: "uuid",
        ipaddress.IPv4Address: "inet",
        ipaddress.IPv6Address: "inet",
        ipaddress.IPv4Interface: "inet",
        ipaddress.IPv6Interface: "inet",
        ipaddress.IPv4Network: "cidr",
        ipaddress.IPv6Network: "cidr",
        dict: "json",
        list: "array",
        tuple: "array",
    }
)


def type_name(sample: Any) -> str:
    """A type name for a column known only by a value of it."""
    kind = type(sample)
    name = _TYPE_NAMES.get(kind)
    if name is None:
        name = next((_TYPE_NAMES[b] for b in kind.__mro__[1:] if b in _TYPE_NAMES), kind.__name__)
    return name
