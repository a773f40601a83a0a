"""The idempotency ledger: which `execute_sql` writes a database has committed, and their results.

A workflow engine runs a task again when its result was lost: the worker died after the
commit and before the engine heard of it, or the update call kept failing. Each write
therefore commits, in its own transaction, a row of this table naming its idempotency key,
a digest of what it was asked to do, and the output it gave. A task whose key is already
there completes with that stored output (`replayed: true`) and runs nothing.

The table lives on the written database itself, so the record and the write commit or roll
back together; `sqladapter ledger init @name` creates it (the only DDL besides seeding), and
`sqladapter ledger prune @name` deletes records older than SQLADAPTER_LEDGER_TTL_SECONDS.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from .dialect import _placeholders
from .errors import ConnectionConfigError, InputError

if TYPE_CHECKING:
    from .connections import Source
    from .dialect import Dialect
    from .runtime import Runtime

TABLE = "sqladapter_ledger"
#: Longest key stored as it is; a longer one is stored as its SHA-256.
MAX_KEY = 200


def ledger_table(metadata: sa.MetaData) -> sa.Table:
    """The ledger's columns: the key, a digest of the request, the output as JSON, when (epoch seconds)."""
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("request", sa.String(64), nullable=False),
        # An output is at most SQLADAPTER_MAX_OUTPUT_BYTES (1 MB by default): past MySQL's TEXT.
        sa.Column("result", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def normalize_key(key: Any) -> str:
    """The key as stored: itself when short, else its digest; InputError for anything but a string."""
    if not isinstance(key, str) or not key:
        raise InputError("idempotency_key must be a non-empty string (the same for every retry of one write)")
    if len(key) > MAX_KEY or not key.isprintable():
        return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def request_digest(request: Any) -> str:
    """A digest of what a write was asked to do, compared when its key comes again."""
    try:
        text = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, which orjson does not write
        text = json.dumps(request, sort_keys=True, separators=(",", ":"), default=list).encode()
    return hashlib.sha256(text).hexdigest()


def _sql(dialect: Dialect, text: str, count: int) -> str:
    return text.format(*_placeholders(dialect.paramstyles, count))


def lookup(dialect: Dialect, connection: Any, key: str) -> tuple[str, dict[str, Any]] | None:
    """(request digest, stored output) of `key` inside the caller's transaction, or None."""
    cursor = dialect.write_cursor(connection)
    try:
        cursor.execute(_sql(dialect, f"SELECT request, result FROM {TABLE} WHERE idempotency_key = {{}}", 1), [key])
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None:
        return None
    return str(row[0]), orjson.loads(row[1])


def record(dialect: Dialect, connection: Any, key: str, request: str, output: dict[str, Any]) -> None:
    """Add `key` with its output inside the caller's transaction (a duplicate key fails the insert)."""
    cursor = dialect.write_cursor(connection)
    try:
        cursor.execute(
            _sql(
                dialect, f"INSERT INTO {TABLE} (idempotency_key, request, result, created_at) VALUES ({{}}, {{}}, {{}}, {{}})", 4
            ),
            [key, request, orjson.dumps(output, default=str).decode(), int(time.time())],
        )
    finally:
        cursor.close()


def exists(source: Source) -> bool:
    """Whether the ledger table is on the source's database."""
    with source.engine.connect() as conn:
        return sa.inspect(conn).has_table(TABLE)


def missing(name: str) -> ConnectionConfigError:
    return ConnectionConfigError(
        f"connection {name!r} has no idempotency ledger (table {TABLE}), which execute_sql commits each write "
        f"together with; create it once with: sqladapter ledger init @{name}"
    )


def init(runtime: Runtime, name: str) -> bool:
    """Create the ledger table on a writable named connection; False when it was there already."""
    source = runtime.pools.writable_source(name)
    try:
        if exists(source):
            return False
        ledger_table(sa.MetaData()).create(source.engine, checkfirst=True)
        return True
    finally:
        if source.dialect.one_mode_per_file:
            runtime.pools.close_engine(source, read_only=False)


def prune(runtime: Runtime, name: str, older_than_seconds: int | None = None) -> int:
    """Delete the records older than `older_than_seconds` (default SQLADAPTER_LEDGER_TTL_SECONDS); how many."""
    source = runtime.pools.writable_source(name)
    seconds = runtime.settings.ledger_ttl_seconds if older_than_seconds is None else older_than_seconds
    try:
        if not exists(source):
            raise missing(name)
        table = ledger_table(sa.MetaData())
        with source.engine.begin() as conn:
            result = conn.execute(sa.delete(table).where(table.c.created_at < int(time.time()) - seconds))
            return int(result.rowcount)
    finally:
        if source.dialect.one_mode_per_file:
            runtime.pools.close_engine(source, read_only=False)
