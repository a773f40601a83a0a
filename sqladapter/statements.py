"""Prepared statements: a checked query, its placeholders, and its text in the driver's style.

Users write `:name` placeholders (with an object of parameters) or `?` (with a list), whatever
the database. The placeholders are found by the dialect's SQL tokenizer, so a `:x` or `?`
inside a string literal or a comment is left alone, and values are always sent to the driver
as bound parameters, never spliced into the text.
"""

from __future__ import annotations

import functools
import re
from collections import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from . import guard
from .errors import InputError, QueryError

if TYPE_CHECKING:
    from .dialect import Dialect

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
    #: The text cut after its last token, when a LIMIT may follow it: a top-level SELECT (or
    #: set operation) with no LIMIT, FETCH or OFFSET of its own. None for anything else.
    limitable: str | None = None

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
            raise InputError(
                f"the query has {self.count} ? placeholder(s) but {len(parameters)} parameter(s) were given"
            )
        return list(parameters)


def _check_values(items: Any) -> None:
    for key, value in items:
        if type(value) not in _SCALAR_TYPES and not isinstance(value, _SCALARS):
            raise InputError(
                f"parameter {key} is {type(value).__name__}; values must be JSON scalars "
                "(string, number, boolean or null)"
            )


@functools.lru_cache(maxsize=1024)
def prepare(sql: str, dialect: Dialect) -> Statement:
    """Check `sql` with the guard and write it in the driver's placeholder style (cached)."""
    tree = guard.parse_one(sql, dialect.grammar)
    guard.check(tree, sql, dialect.grammar, dialect.forbidden_functions)
    nodes = list(tree.find_all(exp.Placeholder))
    tokens = sqlglot.Dialect.get_or_raise(dialect.grammar).tokenize(sql)
    spans = _placeholder_spans(tokens)
    if len(spans) != len(nodes):
        raise QueryError("unsupported placeholder syntax: use :name (with an object) or ? (with a list)")
    names = [name for _, _, name in spans]
    end = _limitable_end(tree, tokens)
    if not spans:
        return Statement(sql, None, (), 0, dialect.paramstyles[0], None if end is None else sql[:end])
    if all(names):
        style, targets = "named", _NAMED_TARGETS
    elif not any(names):
        style, targets = "positional", _POSITIONAL_TARGETS
    else:
        raise InputError("the query mixes :name and ? placeholders; use one style")
    paramstyle = next((s for s in dialect.paramstyles if s in targets), None)
    if paramstyle is None:
        raise InputError(f"{dialect.name} does not accept {style} parameters")
    return Statement(
        _rewrite(sql, spans, paramstyle),
        style,
        tuple(names) if style == "named" else (),
        len(spans),
        paramstyle,
        None if end is None else _rewrite(sql[:end], spans, paramstyle),
    )


def _limitable_end(tree: exp.Expression, tokens: list[Any]) -> int | None:
    # Only a plain SELECT (or WITH ... SELECT, or a set operation of them) at the top, with no
    # row limit or offset of its own, takes a LIMIT appended after its last token; what comes
    # after that token (semicolons, comments) is left out.
    if not isinstance(tree, (exp.Select, exp.SetOperation)) or not tokens:
        return None
    if tokens[0].token_type not in (TokenType.SELECT, TokenType.WITH):
        return None
    if any(tree.args.get(key) is not None for key in ("limit", "offset", "fetch", "locks", "into")):
        return None
    last = next((t for t in reversed(tokens) if t.token_type != TokenType.SEMICOLON), None)
    return None if last is None else last.end + 1


def _placeholder_spans(tokens: list[Any]) -> list[tuple[int, int, str]]:
    spans = []
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.PLACEHOLDER and token.text == "?":
            spans.append((token.start, token.end + 1, ""))
        elif token.token_type == TokenType.COLON and i + 1 < len(tokens):
            following = tokens[i + 1]
            if following.start == token.end + 1 and _NAME.match(following.text):
                spans.append((token.start, following.end + 1, following.text))
    return spans


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
