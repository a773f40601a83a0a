"""Error rules: a dialect says what its driver's errors mean as data, and the core writes them.

A dialect lists `ErrorRule`s in `Dialect.error_rules`. The first rule that matches an exception
names the error class and the hint; the core builds every message the same way:

    <dialect>: <the driver's message> (<code>); <hint>

(the code and the hint where there is one; a driver message of several lines keeps its further
lines below that first one), and keeps the driver's code on the error. The core redacts secrets
from the message afterwards, once, whichever dialect made it.

    error_rules = (
        ErrorRule(QueryTimeoutError, TIME_LIMIT, codes=("57014",)),
        ErrorRule(PermissionDeniedError, CREDENTIALS, code_prefixes=("28",), codes=("42501",)),
        ErrorRule(DatabaseUnavailableError, types=("OperationalError",), codes=(None,)),
        ErrorRule(QueryError),
    )
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection, Sequence

from .errors import (
    DatabaseUnavailableError,
    PermissionDeniedError,
    QueryError,
    SqlAdapterError,
)

if TYPE_CHECKING:
    from .dialect import Dialect

__all__ = [
    "ErrorRule",
    "CONNECTION_OPTION",
    "CONSTRAINT",
    "CREDENTIALS",
    "DATABASE_NAME",
    "READ_ONLY",
    "TIME_LIMIT",
    "PEP_249_RULES",
    "apply",
    "classify",
    "classify_by_default",
    "is_instance",
    "message",
]

# Hints for what every database says in its own words.
CREDENTIALS = "check the user, password and grants of the connection"
READ_ONLY = "queries run read-only"
TIME_LIMIT = "the query ran past its time limit and was stopped: make it cheaper or raise timeout_ms"
DATABASE_NAME = "check the database name in the connection"
CONNECTION_OPTION = "fix the option in the connection's URL"
CONSTRAINT = "the write broke a constraint and was rolled back; the same values fail the same way: change them"


@dataclass(frozen=True)
class ErrorRule:
    """One kind of driver error: how to know it, the error class it is, and what to do about it.

    A rule matches when each of its tests that is given passes; a test with several values
    passes when any one does:

    - `types`: the exception is an instance of one of these classes, or of a class of one of
      these names ("OperationalError", or "module.ClassName"), for a driver the core cannot import;
    - `codes` and `code_prefixes`, one test: the dialect's `error_code` is one of `codes`
      (`None` among them: the driver gave no code; a `range`: a number in it), or a text code
      starting with one of `code_prefixes` (SQLSTATE classes: "08", "28");
    - `phrases` and `pattern`, one test: the driver's message contains one of `phrases` (case
      does not matter), or the regular expression `pattern` is found in it, case ignored.

    A rule without tests matches every error of the dialect's driver: the last, catch-all rule.
    """

    #: The error class an exception matched by this rule becomes.
    error: type[SqlAdapterError]
    #: What the user can do about it, put after the driver's message ("" for nothing).
    hint: str = ""
    types: tuple[type[BaseException] | str, ...] = ()
    codes: Collection[str | int | None] = ()
    code_prefixes: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    pattern: str | None = None
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.error, type) and issubclass(self.error, SqlAdapterError)):
            raise TypeError(f"ErrorRule error must be a SqlAdapterError class, got {self.error!r}")
        if not isinstance(self.hint, str):
            raise TypeError(f"ErrorRule hint must be a str, got {self.hint!r}")
        # One value where a tuple is meant is the mistake most easily made (a str is iterable).
        types = _as_tuple(self.types)
        for kind in types:
            if not (isinstance(kind, str) or (isinstance(kind, type) and issubclass(kind, BaseException))):
                raise TypeError(f"ErrorRule types must be exception classes or class names, got {kind!r}")
        codes = self.codes
        if isinstance(codes, (str, int)) or codes is None:
            codes = (codes,)
        elif not isinstance(codes, (range, frozenset)):
            codes = tuple(codes)
        prefixes = _as_tuple(self.code_prefixes)
        phrases = _as_tuple(self.phrases)
        if not all(isinstance(value, str) for value in (*prefixes, *phrases)):
            raise TypeError("ErrorRule code_prefixes and phrases must be strings")
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "code_prefixes", prefixes)
        object.__setattr__(self, "phrases", tuple(phrase.lower() for phrase in phrases))
        if self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(self.pattern, re.IGNORECASE))

    def matches(self, exc: BaseException, code: str | int | None, text: str) -> bool:
        """Whether `exc`, whose driver code is `code` and message `text`, is of this kind."""
        if self.types and not is_instance(exc, self.types):
            return False
        if (self.codes or self.code_prefixes) and not self._code_matches(code):
            return False
        if self.phrases or self._regex is not None:
            lowered = text.lower()
            if not any(phrase in lowered for phrase in self.phrases) and not (
                self._regex is not None and self._regex.search(text)
            ):
                return False
        return True

    def _code_matches(self, code: str | int | None) -> bool:
        codes = self.codes
        if isinstance(codes, range):
            # `in` on a range compares one by one with anything but an int.
            if type(code) is int and code in codes:
                return True
        elif code in codes:
            return True
        return isinstance(code, str) and bool(self.code_prefixes) and code.startswith(self.code_prefixes)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, type)):
        return (value,)
    return tuple(value)


def is_instance(exc: BaseException, types: Sequence[type[BaseException] | str]) -> bool:
    """isinstance(exc, types), where a type may also be given by its name or module.name."""
    for kind in types:
        if isinstance(kind, str):
            for cls in type(exc).__mro__:
                if kind == cls.__name__ or kind == f"{cls.__module__}.{cls.__qualname__}":
                    return True
        elif isinstance(exc, kind):
            return True
    return False


def message(dialect: str, text: str, code: str | int | None = None, hint: str = "") -> str:
    """The one way an error message from a database reads: `<dialect>: <text> (<code>); <hint>`.

    The code and the hint follow the first line of the driver's text, so that the line a user
    reads first says everything; further lines (DuckDB's and PostgreSQL's LINE 1 with a caret,
    DETAIL, HINT) follow it as the driver wrote them.
    """
    first, newline, rest = text.partition("\n")
    summary = f"{dialect}: {first.rstrip()}"
    if code is not None:
        summary += f" ({code})"
    if hint:
        summary += f"; {hint}"
    return summary + newline + rest


def apply(
    rules: Sequence[ErrorRule], exc: BaseException, *, dialect: str, code: str | int | None, text: str
) -> SqlAdapterError | None:
    """The error the first of `rules` that matches `exc` names, with its message; None if none does."""
    text = text or type(exc).__name__
    for rule in rules:
        if rule.matches(exc, code, text):
            return rule.error(message(dialect, text, code, rule.hint), code=code)
    return None


def classify(dialect: Dialect, exc: BaseException) -> SqlAdapterError | None:
    """What `dialect.error_rules` make of `exc`: None for an exception that is not one of the
    dialect's `driver_errors`, or that no rule matches (the core's defaults then apply)."""
    if not dialect.error_rules or (dialect.driver_errors and not is_instance(exc, dialect.driver_errors)):
        return None
    return apply(dialect.error_rules, exc, dialect=dialect.name, code=dialect.error_code(exc), text=dialect.error_text(exc))


#: The core's rules for what a dialect leaves to it: PEP 249's exception classes, by name.
PEP_249_RULES = (
    ErrorRule(DatabaseUnavailableError, types=("OperationalError", "InterfaceError")),
    ErrorRule(PermissionDeniedError, phrases=("permission", "denied")),
    ErrorRule(QueryError, types=(Exception,)),
    ErrorRule(SqlAdapterError),
)


def classify_by_default(dialect: str, exc: BaseException) -> SqlAdapterError:
    """`PEP_249_RULES` applied to an exception the dialect did not classify; the message names its type."""
    kind = type(exc).__name__
    error = apply(PEP_249_RULES, exc, dialect=dialect, code=None, text=f"{kind}: {str(exc).strip() or kind}")
    assert error is not None  # the last rule matches everything
    return error
