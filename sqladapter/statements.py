"""Checked statements: the canonical text of a query that passed the guard, in the driver's style.

Users write `:name` placeholders (with an object of parameters) or `?` (with a list), whatever
the database. The placeholders are found by the dialect's own tokenizer, so a `:x` or `?`
inside a string literal or a comment is left alone, and the values go to the driver as
parameters, never spliced into the text by sqladapter.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections import OrderedDict, abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .errors import InputError

if TYPE_CHECKING:
    from .dialect import Dialect

_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_NAMED_TARGETS = ("named", "pyformat", "named_dollar", "qmark", "numeric_dollar")
_POSITIONAL_TARGETS = ("qmark", "pyformat", "format", "numeric_dollar")


@dataclass(frozen=True)
class Statement:
    """A query that passed the guard, ready for one driver."""

    #: The text sent to the driver.
    sql: str
    #: "named", "positional", or None when the query has no placeholders.
    style: str | None
    #: Named placeholders in order of appearance (repeats kept); empty for positional.
    names: tuple[str, ...]
    #: How many placeholders the text holds.
    count: int
    #: The driver paramstyle the text was written for.
    paramstyle: str
    #: The text again when a LIMIT may follow it: a top-level SELECT (or set operation) with no
    #: LIMIT, FETCH, OFFSET or locking clause of its own. None for anything else.
    limitable: str | None = None
    #: For positional parameters: which parameter each placeholder takes, in text order.
    order: tuple[int, ...] | None = None
    #: A write statement with a RETURNING clause.
    returning: bool = False

    def limited(self, rows: int) -> str:
        """The text asking the database for at most `rows` rows where that can be said in SQL."""
        if self.limitable is None:
            return self.sql
        return f"{self.limitable}\nLIMIT {int(rows)}"

    def bind(self, parameters: Mapping[str, Any] | Sequence[Any] | None) -> Any:
        """The parameters in the form the driver takes, or an InputError naming what is wrong."""
        if parameters is None or (not parameters and self.style is None):
            if self.style is not None:
                missing = sorted(set(self.names)) if self.names else [f"{self.count} positional"]
                raise InputError(f"missing parameter(s): {', '.join(missing)}; pass them in parameters")
            return None
        if type(parameters) is dict or isinstance(parameters, abc.Mapping):
            return self._bind_named(parameters)
        return self._bind_positional(parameters)

    def bind_many(self, parameter_sets: Sequence[Any]) -> list[Any]:
        """Every parameter set of a batch in the driver's form, checked as `bind` checks one.

        The common case (every set a dict with exactly the statement's names, or a list of the
        right length, all values JSON scalars) is checked and converted a whole batch at a
        time, in C where it can be: a batch of 10,000 rows binds in a few milliseconds, not
        the hundred a call per row takes. Anything else goes row by row, so the error names
        the set that is wrong.
        """
        if self.style == "named" and set(map(type, parameter_sets)) == {dict}:
            # Every set holds each name (itemgetter raises otherwise) and no other (as many keys).
            width = len(set(self.names))
            if set(map(len, parameter_sets)) == {width}:
                try:
                    rows = _rows(operator.itemgetter(*self.names), len(self.names), parameter_sets)
                except KeyError:
                    rows = None
                if rows is not None and _all_scalars(itertools.chain.from_iterable(rows)):
                    return rows if self.paramstyle in ("qmark", "numeric_dollar") else list(parameter_sets)
        elif (
            self.style == "positional"
            and set(map(type, parameter_sets)) == {list}
            and set(map(len, parameter_sets)) == {self.count}
        ):
            if _all_scalars(itertools.chain.from_iterable(parameter_sets)):
                if self.order is not None and any(i != n for n, i in enumerate(self.order)):
                    return _rows(operator.itemgetter(*self.order), len(self.order), parameter_sets)
                return list(parameter_sets)
        bound = []
        for i, parameters in enumerate(parameter_sets):
            try:
                bound.append(self.bind(parameters))
            except InputError as exc:
                raise InputError(f"parameter_sets[{i}]: {exc.message}") from None
        return bound

    def _bind_named(self, parameters: Mapping[str, Any]) -> Any:
        if self.style == "positional":
            raise InputError("the query uses ? placeholders: pass parameters as a list, in order")
        _check_values(parameters.items())
        if parameters.keys() != set(self.names):
            wanted = set(self.names)
            missing = sorted(wanted - parameters.keys())
            unused = sorted(parameters.keys() - wanted)
            if missing:
                raise InputError(f"missing parameter(s): {', '.join(missing)}; the query uses :{missing[0]}")
            if unused:
                raise InputError(f"unused parameter(s): {', '.join(unused)}; the query has no :{unused[0]} placeholder")
        if self.paramstyle in ("qmark", "numeric_dollar"):
            return [parameters[name] for name in self.names]
        return dict(parameters)

    def _bind_positional(self, parameters: Sequence[Any]) -> Any:
        if type(parameters) is not list and (isinstance(parameters, (str, bytes)) or not isinstance(parameters, abc.Sequence)):
            raise InputError("parameters must be an object (for :name placeholders) or a list (for ? placeholders)")
        if self.style == "named":
            raise InputError("the query uses :name placeholders: pass parameters as an object")
        _check_values(enumerate(parameters, 1))
        if len(parameters) != self.count:
            raise InputError(f"the query has {self.count} ? placeholder(s) but {len(parameters)} parameter(s) were given")
        if self.order is not None and any(i != n for n, i in enumerate(self.order)):
            return [parameters[i] for i in self.order]
        return list(parameters)


def _all_scalars(values: Any) -> bool:
    return _SCALAR_TYPES.issuperset(set(map(type, values)))


def _rows(getter: Any, width: int, parameter_sets: Sequence[Any]) -> list[Any]:
    # itemgetter of one key gives the value itself, of several a tuple.
    if width == 1:
        return [[value] for value in map(getter, parameter_sets)]
    return list(map(getter, parameter_sets))


def _check_values(items: Any) -> None:
    for key, value in items:
        if type(value) not in _SCALAR_TYPES and not isinstance(value, _SCALARS):
            raise InputError(
                f"parameter {key} is {type(value).__name__}; values must be JSON scalars (string, number, boolean or null)"
            )


def check_statement(sql: str, dialect: Dialect, allowed: frozenset[str], *, write: bool = False) -> Statement:
    """Check `sql` against the `allowed` functions; write it canonically in the driver's style.

    With `write`, `sql` is an `execute_sql` statement, checked by `Dialect.compile_write`.
    """
    checked = dialect.compile_write(sql, allowed) if write else dialect.compile(sql, allowed)
    spans = list(checked.spans)
    if checked.style is None:
        paramstyle = dialect.paramstyles[0]
        return Statement(
            checked.sql, None, (), 0, paramstyle, checked.sql if checked.limitable else None, returning=checked.returning
        )
    targets = _NAMED_TARGETS if checked.style == "named" else _POSITIONAL_TARGETS
    paramstyle = next((s for s in dialect.paramstyles if s in targets), None)  # type: ignore[assignment]
    if write and "qmark" in dialect.paramstyles:
        # A batch binds fastest as tuples in placeholder order (SQLite reads a dict's values by
        # name, a tuple's by position): writes take ? where the driver has it.
        paramstyle = "qmark"
    if paramstyle is None:
        raise InputError(f"{dialect.name} does not accept {checked.style} parameters")
    order = None
    if checked.style == "positional":
        # Positional placeholders were named _p0, _p1, ... in the order the caller wrote them;
        # the canonical text may list them in another order (LIMIT ?, ? becomes LIMIT ? OFFSET ?).
        order = tuple(int(name[2:]) for _, _, name in spans)
        spans = [(start, end, "") for start, end, _ in spans]
    text = _rewrite(checked.sql, spans, paramstyle)
    names = tuple(name for _, _, name in spans) if checked.style == "named" else ()
    return Statement(
        text, checked.style, names, len(spans), paramstyle, text if checked.limitable else None, order, checked.returning
    )


class StatementCache:
    """Checked statements by query text, dialect and allowlist, bounded in entries and in bytes.

    A workflow sends the same query again and again, and checking it (parse, walk, regenerate)
    costs more than running a point lookup. Texts longer than `max_text` are checked every
    time instead, and the texts kept add up to at most `max_bytes`, so query texts chosen by
    task input cannot grow the worker's memory.
    """

    def __init__(self, max_entries: int = 512, max_text: int = 16_384, max_bytes: int = 2_000_000) -> None:
        self.max_entries, self.max_text, self.max_bytes = max_entries, max_text, max_bytes
        self._entries: OrderedDict[tuple[str, Dialect, frozenset[str], bool], Statement] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, sql: str, dialect: Dialect, allowed: frozenset[str], *, write: bool = False) -> Statement:
        """`sql` checked against the `allowed` functions, written canonically in the driver's style.

        A query and a write statement of the same text are different entries: each was checked
        by its own path.
        """
        if len(sql) > self.max_text:
            return check_statement(sql, dialect, allowed, write=write)
        key = (sql, dialect, allowed, write)
        statement = self._entries.get(key)
        if statement is not None:
            return statement
        statement = check_statement(sql, dialect, allowed, write=write)  # outside the lock: other threads go on
        with self._lock:
            if key not in self._entries:
                self._entries[key] = statement
                self._bytes += len(sql)
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    (old, _, _, _), _ = self._entries.popitem(last=False)
                    self._bytes -= len(old)
        return statement

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _rewrite(sql: str, spans: list[tuple[int, int, str]], paramstyle: str) -> str:
    # Drivers with format-style placeholders read every % in the text, so literal ones double.
    escape = paramstyle in ("pyformat", "format")
    parts, position = [], 0
    for index, (start, end, name) in enumerate(spans, 1):
        parts.append(sql[position:start])
        parts.append(_render(paramstyle, name, index))
        position = end
    parts.append(sql[position:])
    if escape:
        parts = [p.replace("%", "%%") if i % 2 == 0 else p for i, p in enumerate(parts)]
    return "".join(parts)


def _render(paramstyle: str, name: str, index: int) -> str:
    if paramstyle == "named":
        return f":{name}"
    if paramstyle == "named_dollar":
        return f"${name}"
    if paramstyle == "numeric_dollar":
        return f"${index}"
    if paramstyle == "pyformat" and name:
        return f"%({name})s"
    if paramstyle in ("pyformat", "format"):
        return "%s"
    return "?"
