"""sqladapter: run one parameterized, read-only SQL query as a workflow task, get JSON rows.

`from sqladapter import hookimpl, Dialect` is all a dialect plugin needs.
"""

from importlib.metadata import PackageNotFoundError, version

from .dialect import Dialect
from .errors import (
    ConnectionConfigError,
    DatabaseUnavailableError,
    InputError,
    LockTimeoutError,
    NotReadOnlyError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    SqlAdapterError,
    UnknownDialectError,
)
from .hookspecs import hookimpl
from .query import run_query
from .settings import Settings

try:
    __version__ = version("sqladapter")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "ConnectionConfigError",
    "DatabaseUnavailableError",
    "Dialect",
    "InputError",
    "LockTimeoutError",
    "NotReadOnlyError",
    "PermissionDeniedError",
    "QueryError",
    "QueryTimeoutError",
    "Settings",
    "SqlAdapterError",
    "UnknownDialectError",
    "__version__",
    "hookimpl",
    "run_query",
]
