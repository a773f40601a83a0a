"""The worker's settings, read from the environment: the caps and policies an operator sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import ConnectionConfigError


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConnectionConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ConnectionConfigError(f"{name}={raw!r} must be at least 1")
    return value


@dataclass(frozen=True)
class Settings:
    """Operator settings. Task inputs can lower a limit, never raise it past these caps."""

    #: Where relative database paths resolve, and the only place inline file paths may point.
    data_dir: Path
    #: Cap on max_rows (SQLADAPTER_MAX_ROWS).
    max_rows: int = 10_000
    #: Cap on timeout_ms (SQLADAPTER_MAX_TIMEOUT_MS).
    max_timeout_ms: int = 300_000
    #: Allow passwords inside inline connection strings (SQLADAPTER_ALLOW_INLINE_CREDENTIALS=1).
    allow_inline_credentials: bool = False
    #: A TOML file with a [connections] table of named connections (SQLADAPTER_CONNECTIONS_FILE).
    connections_file: Path | None = None
    #: Cap on a task output's JSON size; past it, fewer rows and truncated: true (SQLADAPTER_MAX_OUTPUT_BYTES).
    max_output_bytes: int = 1_000_000
    #: Distinct inline server URLs (not named connections, not files) a worker opens pools for
    #: (SQLADAPTER_MAX_INLINE_URLS); each keeps connections open on its server.
    max_inline_urls: int = 16
    #: Seconds an inline server URL's pool may sit unused before it is closed and stops counting
    #: toward max_inline_urls (SQLADAPTER_INLINE_URL_IDLE_SECONDS).
    inline_url_idle_seconds: int = 600
    #: Cap on a query's text in bytes (SQLADAPTER_MAX_QUERY_BYTES): parsing is work done before
    #: any time limit applies, so it is bounded by size instead.
    max_query_bytes: int = 100_000
    #: Seconds an `execute_sql` idempotency record is kept before `sqladapter ledger prune`
    #: deletes it (SQLADAPTER_LEDGER_TTL_SECONDS); a retry after that runs the write again.
    ledger_ttl_seconds: int = 7 * 24 * 3600
    #: Cap on the parameter sets of one `execute_sql` batch (SQLADAPTER_MAX_PARAMETER_SETS).
    max_parameter_sets: int = 100_000

    default_max_rows = 1000
    default_timeout_ms = 30_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment gives now; a `Runtime` reads them once, when it is made."""
        data_dir = Path(environ.get("SQLADAPTER_DATA_DIR") or ".")
        connections_file = environ.get("SQLADAPTER_CONNECTIONS_FILE")
        return cls(
            data_dir=data_dir.absolute(),
            max_rows=_int(environ, "SQLADAPTER_MAX_ROWS", cls.max_rows),
            max_timeout_ms=_int(environ, "SQLADAPTER_MAX_TIMEOUT_MS", cls.max_timeout_ms),
            allow_inline_credentials=environ.get("SQLADAPTER_ALLOW_INLINE_CREDENTIALS", "") in ("1", "true", "yes"),
            connections_file=Path(connections_file) if connections_file else None,
            max_output_bytes=_int(environ, "SQLADAPTER_MAX_OUTPUT_BYTES", cls.max_output_bytes),
            max_inline_urls=_int(environ, "SQLADAPTER_MAX_INLINE_URLS", cls.max_inline_urls),
            max_query_bytes=_int(environ, "SQLADAPTER_MAX_QUERY_BYTES", cls.max_query_bytes),
            inline_url_idle_seconds=_int(environ, "SQLADAPTER_INLINE_URL_IDLE_SECONDS", cls.inline_url_idle_seconds),
            ledger_ttl_seconds=_int(environ, "SQLADAPTER_LEDGER_TTL_SECONDS", cls.ledger_ttl_seconds),
            max_parameter_sets=_int(environ, "SQLADAPTER_MAX_PARAMETER_SETS", cls.max_parameter_sets),
        )
