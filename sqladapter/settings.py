"""The worker's settings, read from the environment: the caps and policies an operator sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

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


class _Recorder(Mapping[str, str]):
    """The environment as `from_env` reads it, noting each name looked up and what it held."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.read: dict[str, str | None] = {}
        self.iterated = False

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(name)
        self.read[name] = value
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        self.iterated = True  # a read of every name: nothing narrower to check the cache by
        return iter(self._environ)

    def __len__(self) -> int:
        self.iterated = True
        return len(self._environ)


_cache: dict[type, tuple[tuple[Any, ...], tuple[Any, ...], str | None, Any]] = {}

# os.environ keeps the process environment in `_data`, keyed and valued in the platform's
# encoding; reading it directly skips an encode and a decode per name, which is most of the
# cost of checking the cache. `os.putenv` alone bypasses os.environ (and so this check) as it
# always has for every reader of os.environ.
_raw_environ: Mapping[Any, Any] = getattr(os.environ, "_data", os.environ)


def _raw_key(name: str) -> Any:
    return os.environ.encodekey(name) if _raw_environ is not os.environ else name  # type: ignore[attr-defined]


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
    #: Cap on a query's text in bytes (SQLADAPTER_MAX_QUERY_BYTES): parsing is work done before
    #: any time limit applies, so it is bounded by size instead.
    max_query_bytes: int = 100_000

    default_max_rows = 1000
    default_timeout_ms = 30_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment gives now (from os.environ: cached while it is unchanged)."""
        if environ is not os.environ:
            return cls._read(environ)
        # Every task reads the settings: rebuilding them costs more than the rest of a small
        # query's own Python work. The cache holds the values of exactly the variables the
        # last read looked up (and the directory a relative data dir resolved against), and
        # is used only while all of them are unchanged.
        cached = _cache.get(cls)
        if cached is not None:
            keys, values, cwd, settings = cached
            if tuple(map(_raw_environ.get, keys)) == values and (cwd is None or cwd == os.getcwd()):
                return settings
        recorder = _Recorder(os.environ)
        settings = cls._read(recorder)
        if not recorder.iterated:
            relative = not Path(os.environ.get("SQLADAPTER_DATA_DIR") or ".").is_absolute()
            keys = tuple(map(_raw_key, recorder.read))
            values = tuple(map(_raw_environ.get, keys))
            _cache[cls] = (keys, values, os.getcwd() if relative else None, settings)
        return settings

    @classmethod
    def _read(cls, environ: Mapping[str, str]) -> Settings:
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
        )
