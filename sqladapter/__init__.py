"""sqladapter: run one parameterized, read-only SQL query as a workflow task, get JSON rows.

`from sqladapter import hookimpl, Dialect` is all a dialect plugin needs; every name a plugin
may import is in `__all__`. `Runtime` is the object a worker process runs tasks with, and
`run_query` runs one on a default Runtime made on first use.

`Runtime`, `run_query`, `Dialect` and `__version__` are looked up on first use. Most of them load
SQLAlchemy and sqlglot, the last importlib.metadata, and every `import sqladapter.<module>` runs
this file first: importing them here would make `sqladapter --help`, and any module that only
needs the errors or settings, wait for the whole database stack.
"""

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .error_rules import ErrorRule
from .errors import (
    ConnectionConfigError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    InputError,
    LockTimeoutError,
    NotDmlError,
    NotReadOnlyError,
    NotWritableError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    RowCountError,
    SqlAdapterError,
    UnknownDialectError,
)
from .hookspecs import hookimpl
from .settings import Settings

if TYPE_CHECKING:
    from .dialect import BulkLoader, Dialect, Limits
    from .runtime import Runtime, run_query

# Public names that are imported when first asked for, and the module that defines each.
_LAZY = MappingProxyType(
    {
        "BulkLoader": ".dialect",
        "Dialect": ".dialect",
        "Limits": ".dialect",
        "Runtime": ".runtime",
        "run_query": ".runtime",
    }
)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _installed_version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        # AttributeError, not ImportError: `from sqladapter import statements` relies on it to
        # fall back to importing the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups no longer come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sqladapter")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


__all__ = [
    "BulkLoader",
    "ConnectionConfigError",
    "ConstraintViolationError",
    "DatabaseUnavailableError",
    "Dialect",
    "ErrorRule",
    "InputError",
    "Limits",
    "LockTimeoutError",
    "NotDmlError",
    "NotReadOnlyError",
    "NotWritableError",
    "PermissionDeniedError",
    "QueryError",
    "QueryTimeoutError",
    "RowCountError",
    "Runtime",
    "Settings",
    "SqlAdapterError",
    "UnknownDialectError",
    "__version__",
    "deadlines",
    "error_rules",
    "guard",
    "hookimpl",
    "jsontypes",
    "run_query",
]
