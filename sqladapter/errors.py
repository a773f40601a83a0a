"""The one exception family every code path raises, and the redaction that keeps secrets out of it.

Each error knows whether retrying could help (`retryable`), carries a message a user can act
on, and the database's own error code where there is one. Engines map `retryable` to their
task status (Conductor: FAILED vs FAILED_WITH_TERMINAL_ERROR).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

__all__ = [
    "SqlAdapterError",
    "InputError",
    "NotReadOnlyError",
    "NotDmlError",
    "NotWritableError",
    "ConstraintViolationError",
    "RowCountError",
    "ConnectionConfigError",
    "UnknownDialectError",
    "QueryError",
    "PermissionDeniedError",
    "DatabaseUnavailableError",
    "QueryTimeoutError",
    "LockTimeoutError",
    "redact",
]


class SqlAdapterError(Exception):
    """Base class: `retryable` says whether the same task may succeed when run again."""

    type = "error"
    retryable = False

    def __init__(self, message: str, *, code: str | int | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.code = None if code is None else str(code)
        if retryable is not None:
            self.retryable = retryable

    def to_dict(self) -> dict[str, Any]:
        """The `error` object put in a failed task's output."""
        return {"type": self.type, "message": self.message, "retryable": self.retryable, "code": self.code}


# Terminal: running the same input again cannot succeed.


class InputError(SqlAdapterError):
    """The task input is malformed: a missing field, a wrong type, a bad or missing bind parameter."""

    type = "bad_input"


class NotReadOnlyError(SqlAdapterError):
    """The query is not exactly one read-only statement."""

    type = "not_read_only"


class NotDmlError(SqlAdapterError):
    """An `execute_sql` statement is not one INSERT, UPDATE, DELETE or upsert/MERGE (DDL among them)."""

    type = "not_dml"


class ConnectionConfigError(SqlAdapterError):
    """The connection string or name cannot be used: refused path, inline password, unknown name."""

    type = "connection_config"


class NotWritableError(ConnectionConfigError):
    """A write was asked of a connection the operator did not mark writable (or of an inline one)."""

    type = "not_writable"


class UnknownDialectError(ConnectionConfigError):
    """No installed dialect plugin claims the URL scheme or file extension."""

    type = "unknown_dialect"


class QueryError(SqlAdapterError):
    """The database rejected the query: syntax error, unknown table or column, bad cast."""

    type = "query_error"


class ConstraintViolationError(QueryError):
    """A write broke a constraint (unique, foreign key, not null, check); it was rolled back."""

    type = "constraint_violation"


class RowCountError(SqlAdapterError):
    """A write changed a number of rows outside its `expected_rows`; it was rolled back."""

    type = "unexpected_row_count"


class PermissionDeniedError(SqlAdapterError):
    """The database refused: wrong password, missing grant, or a write attempted read-only."""

    type = "permission_denied"


# Retryable: the same input may succeed later.


class DatabaseUnavailableError(SqlAdapterError):
    """Cannot connect, or the connection was lost."""

    type = "database_unavailable"
    retryable = True


class QueryTimeoutError(SqlAdapterError):
    """The query ran past its time limit and was stopped."""

    type = "timeout"
    retryable = True


class LockTimeoutError(SqlAdapterError):
    """A lock wait timed out, a deadlock or a serialization failure rolled the query back."""

    type = "lock_timeout"
    retryable = True


_URL_WITH_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)([^@\s]*)(@)")
_PASSWORD_IN_QUERY = re.compile(r"((?:password|passwd|pwd)=)([^&\s'\"]*)", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets and any `user:password@` or `password=` from a text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _URL_WITH_PASSWORD.sub(r"\1***\3", text)
    return _PASSWORD_IN_QUERY.sub(r"\1***", text)
