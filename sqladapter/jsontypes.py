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
| date, time | ISO 8601 string |
| timedelta | ISO 8601 duration ("P1DT2H3M4.5S") |
| UUID | string |
| dict | object (keys as strings, values by these rules) |
| list, tuple | array (values by these rules) |
| anything else | str(value) |

Converters are picked once per column from its first non-null value, then applied to the
column's values; where a dialect's columns are not typed (SQLite), each converter checks the
value's type and falls back to the general rule.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import itertools
import math
import uuid
from typing import Any, Callable, Iterable, Sequence

MAX_SAFE_INTEGER = 2**53 - 1

Converter = Callable[[Any], Any]


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


def _str(value: uuid.UUID) -> str:
    return str(value)


def _dict(value: dict) -> dict[str, Any]:
    return {str(k): to_json(v) for k, v in value.items()}


def _list(value: list | tuple) -> list[Any]:
    return [to_json(v) for v in value]


def _identity(value: Any) -> Any:
    return value


_RULES: dict[type, Converter] = {
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
    dict: _dict,
    list: _list,
    tuple: _list,
}


def _rule(kind: type) -> Converter:
    rule = _RULES.get(kind)
    if rule is None:
        # Subclasses (an IntEnum, a driver's own datetime) follow their base class's rule.
        rule = next((_RULES[base] for base in kind.__mro__[1:] if base in _RULES), str)
        _RULES[kind] = rule
    return rule


def to_json(value: Any) -> Any:
    """Convert one value by the contract. Never raises for a value a driver can return."""
    return _rule(type(value))(value)


# Rules that return JSON-native values unchanged for most inputs still need to see each value
# (range or finiteness checks), except these, which are the identity.
_IDENTITY_KINDS = (str, bool, type(None))


def converter_for(sample: Any) -> Converter | None:
    """The converter for a typed column whose first non-null value is `sample`; None: identity."""
    kind = type(sample)
    if kind in _IDENTITY_KINDS:
        return None
    return _rule(kind)


def checked_converter(sample: Any) -> Converter:
    """The converter for an untyped column: fast for values like `sample`, correct for any."""
    kind = type(sample)
    rule = _rule(kind)
    if rule is _identity:

        def convert(value: Any) -> Any:
            return value if type(value) is kind or value is None else to_json(value)

    else:

        def convert(value: Any) -> Any:
            if type(value) is kind:
                return rule(value)
            return to_json(value)

    return convert


# -- whole columns ---------------------------------------------------------------------------
#
# A result is converted column by column. Where a column's values are JSON already (text,
# integers within the safe range, finite floats), C-level passes over the column prove it and
# nothing is copied; only columns that need a conversion pay a Python call per value.

_JSON_KINDS = frozenset({str, bool})


def _safe_ints(values: Sequence[Any]) -> bool:
    # filter(None, ...) drops None and 0, both JSON as they are.
    return -MAX_SAFE_INTEGER <= min(filter(None, values), default=0) and max(
        filter(None, values), default=0
    ) <= MAX_SAFE_INTEGER


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
    return list(map(to_json, values))


_TYPE_NAMES: dict[type, str] = {
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
    dict: "json",
    list: "array",
    tuple: "array",
}


def type_name(sample: Any) -> str:
    """A type name for a column known only by a value of it."""
    kind = type(sample)
    name = _TYPE_NAMES.get(kind)
    if name is None:
        name = next((_TYPE_NAMES[b] for b in kind.__mro__[1:] if b in _TYPE_NAMES), kind.__name__)
    return name
