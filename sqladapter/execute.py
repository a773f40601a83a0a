"""The write path: `execute_sql`, the one way from a write task's input to its JSON output.

    task input -> validated fields -> a named connection the operator marked writable
      -> each statement checked as DML (INSERT, UPDATE, DELETE, upsert, MERGE), canonical SQL
      -> one transaction on the read-write engine, with the dialect's time limit:
           the idempotency key looked up in the ledger (found: the stored output, replayed)
           the statements run (a parameter_sets batch through the driver's executemany)
           expected_rows checked (a mismatch rolls everything back)
           the key and the output recorded in the ledger
      -> commit -> output dict

`Runtime.execute` calls `run`. The read path (`sqladapter.query`) never comes here, and its
read-only engines and check are not used for writes: a `query_sql` task cannot write, even
on a connection that allows writes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from . import ledger
from .dialect import Limits
from .errors import (
    InputError,
    NotDmlError,
    RowCountError,
    SqlAdapterError,
    redact,
)
from .query import _check_size, _fit_output, _positive_int, _to_json, classify

if TYPE_CHECKING:
    from .connections import Source
    from .runtime import Runtime
    from .statements import Statement

log = logging.getLogger("sqladapter")

INPUT_FIELDS = frozenset(
    {
        "connection",
        "connection_string",
        "statement",
        "statements",
        "parameters",
        "parameter_sets",
        "expected_rows",
        "timeout_ms",
        "max_rows",
        "shape",
        "idempotency_key",
    }
)
_ENTRY_FIELDS = frozenset({"statement", "parameters", "parameter_sets", "expected_rows"})


@dataclass(frozen=True)
class _Entry:
    """One statement of a write task, as given."""

    text: str
    parameters: Any
    parameter_sets: list[Any] | None
    expected: tuple[int, int] | None


def _expected(value: Any, where: str) -> tuple[int, int] | None:
    """expected_rows as an inclusive (min, max); an exact count n is (n, n)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, value
    if isinstance(value, abc.Mapping) and value and set(value) <= {"min", "max"}:
        low, high = value.get("min", 0), value.get("max")
        bounds = [low] + ([] if high is None else [high])
        if all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bounds) and (high is None or low <= high):
            return low, (high if high is not None else 2**63)
    raise InputError(f'{where} must be a row count (0 or more) or {{"min": a, "max": b}} with 0 <= a <= b, got {value!r}')


def _parameter_sets(value: Any, where: str, cap: int) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InputError(f"{where} must be a non-empty list of parameter objects (or lists), one per row of the batch")
    if len(value) > cap:
        raise InputError(
            f"{where} holds {len(value)} parameter sets, over the {cap} accepted (SQLADAPTER_MAX_PARAMETER_SETS); "
            "split the batch into several tasks"
        )
    return value


def _entries(task_input: Mapping[str, Any], cap: int) -> tuple[list[_Entry], bool]:
    """The statements of a task, and whether they came as a list."""
    statement, statements = task_input.get("statement"), task_input.get("statements")
    if (statement is None) == (statements is None):
        raise InputError(
            "give exactly one of statement (one INSERT, UPDATE, DELETE or upsert) or statements "
            "(a list of them, run in one transaction)"
        )
    if statement is not None:
        parameters, sets = task_input.get("parameters"), task_input.get("parameter_sets")
        return [_entry(statement, parameters, sets, None, "statement", cap)], False
    if task_input.get("parameters") is not None or task_input.get("parameter_sets") is not None:
        raise InputError('with statements, give each entry its own parameters: {"statement": "...", "parameters": {...}}')
    if not isinstance(statements, list) or not statements:
        raise InputError("statements must be a non-empty list of statements (strings, or objects with statement and parameters)")
    entries = []
    for i, item in enumerate(statements):
        where = f"statements[{i}]"
        if isinstance(item, str):
            entries.append(_entry(item, None, None, None, where, cap))
        elif isinstance(item, abc.Mapping):
            unknown = sorted(set(item) - _ENTRY_FIELDS)
            if unknown:
                raise InputError(
                    f"{where} has unknown field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(_ENTRY_FIELDS))}"
                )
            expected = _expected(item.get("expected_rows"), f"{where}.expected_rows")
            entries.append(
                _entry(item.get("statement"), item.get("parameters"), item.get("parameter_sets"), expected, where, cap)
            )
        else:
            raise InputError(f"{where} must be a statement string or an object with statement and parameters")
    return entries, True


def _entry(text: Any, parameters: Any, sets: Any, expected: tuple[int, int] | None, where: str, cap: int) -> _Entry:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where} is required: one INSERT, UPDATE, DELETE or upsert statement")
    if parameters is not None and not isinstance(parameters, (dict, list)):
        raise InputError("parameters must be an object (for :name placeholders) or a list (for ? placeholders)")
    if parameters is not None and sets is not None:
        raise InputError("give parameters (one execution) or parameter_sets (a batch), not both")
    return _Entry(text, parameters, _parameter_sets(sets, "parameter_sets", cap), expected)


def run(runtime: Runtime, task_input: Mapping[str, Any], *, default_key: str | None = None) -> dict[str, Any]:
    """Run one write task described by `task_input` on `runtime`; return the JSON-ready output.

    `default_key` is the engine's idempotency key for this task (Conductor: workflow id, task
    reference name and iteration), used when the input gives none. With no key at all (the
    CLI without --idempotency-key), the write is not recorded in the ledger.
    """
    started = time.perf_counter()
    settings = runtime.settings
    if not isinstance(task_input, abc.Mapping):
        raise InputError("the task input must be an object with connection and statement (or statements)")
    unknown = sorted(set(task_input) - INPUT_FIELDS)
    if unknown:
        raise InputError(f"unknown input field(s): {', '.join(unknown)}; accepted: {', '.join(sorted(INPUT_FIELDS))}")
    entries, listed = _entries(task_input, settings.max_parameter_sets)
    for entry in entries:
        _check_size(entry.text, settings.max_query_bytes)
    expected = _expected(task_input.get("expected_rows"), "expected_rows")
    timeout_ms = min(_positive_int(task_input, "timeout_ms", settings.default_timeout_ms), settings.max_timeout_ms)
    max_rows = min(_positive_int(task_input, "max_rows", settings.default_max_rows), settings.max_rows)
    shape = task_input.get("shape") or "objects"
    if shape not in ("objects", "arrays"):
        raise InputError(f"shape must be one of objects, arrays, got {shape!r}")
    key_given = task_input.get("idempotency_key")
    key = (
        ledger.normalize_key(key_given) if key_given is not None else (ledger.normalize_key(default_key) if default_key else None)
    )
    name = task_input.get("connection")
    source = runtime.pools.writable_source(name, task_input.get("connection_string"))
    pools = runtime.pools
    if not source.dialect.one_mode_per_file:
        output = _checked_and_run(runtime, source, str(name), entries, expected, listed, key, timeout_ms, max_rows, shape)
    else:
        # The file cannot be open read-only and read-write in one process (DuckDB): writes to
        # it take turns, each closing the read-only engine first and its own engine after.
        with pools.file_lock(source):
            pools.close_engine(source, read_only=True)
            # Resolved again under the lock: the engine resolved before it may be one that the
            # write before this one closed.
            source = pools.resolve(None, name, read_only=False)
            try:
                output = _checked_and_run(runtime, source, str(name), entries, expected, listed, key, timeout_ms, max_rows, shape)
            finally:
                pools.close_engine(source, read_only=False)
                source.engine.dispose()
    output["dialect"] = source.dialect.name
    output["elapsedMs"] = round((time.perf_counter() - started) * 1000, 3)
    return output


def _checked_and_run(
    runtime: Runtime,
    source: Source,
    name: str,
    entries: list[_Entry],
    expected: tuple[int, int] | None,
    listed: bool,
    key: str | None,
    timeout_ms: int,
    max_rows: int,
    shape: str,
) -> dict[str, Any]:
    settings = runtime.settings
    try:
        try:
            allowed = runtime.pools.allowed_functions(source)
        except Exception as exc:
            raise classify(source, exc, connecting=True) from None
        statements = [runtime.statements.get(entry.text, source.dialect, allowed, write=True) for entry in entries]
        for statement in statements:
            # The ledger is what makes retries safe: a task that could write it could make a
            # later write look done (or a done one look undone). Refused by name in the text
            # that runs, a literal spelling it included: a false refusal, never a miss.
            if ledger.TABLE in statement.sql.lower():
                raise NotDmlError(
                    f"statements may not touch {ledger.TABLE}, the idempotency ledger: only sqladapter writes it "
                    "(sqladapter ledger prune deletes expired records)"
                )
        bound = [_bind(statement, entry) for statement, entry in zip(statements, entries)]
        # The digest is of what runs: the canonical statements and the values as bound to them
        # (in placeholder order, so it does not depend on how an object's keys were ordered).
        request = ledger.request_digest({"connection": name, "statements": [s.sql for s in statements], "parameters": bound})
        limits = Limits(max_rows, timeout_ms, settings.max_output_bytes, time.monotonic() + timeout_ms / 1000)
        return _transaction(source, name, statements, bound, entries, expected, listed, key, request, limits, shape)
    except SqlAdapterError as exc:
        exc.message = redact(exc.message, source.secrets)
        exc.args = (exc.message,)
        raise


def _bind(statement: Statement, entry: _Entry) -> Any:
    if entry.parameter_sets is None:
        return statement.bind(entry.parameters)
    if statement.returning:
        raise InputError("a parameter_sets batch cannot return rows: drop RETURNING, or run one row per task with parameters")
    if statement.style is None:
        raise InputError("parameter_sets is for a statement with placeholders (:name or ?); this one has none")
    return statement.bind_many(entry.parameter_sets)


def _transaction(
    source: Source,
    name: str,
    statements: list[Statement],
    bound: list[Any],
    entries: list[_Entry],
    expected: tuple[int, int] | None,
    listed: bool,
    key: str | None,
    request: str,
    limits: Limits,
    shape: str,
) -> dict[str, Any]:
    dialect = source.dialect
    try:
        connection = source.engine.raw_connection()
    except Exception as exc:
        raise classify(source, exc, connecting=True) from None
    try:
        try:
            with dialect.time_limit(connection, limits):
                dialect.begin_write(connection, limits)
                if key is not None:
                    stored = _lookup(source, connection, name, key)
                    if stored is not None:
                        dialect.rollback_write(connection)
                        return _replayed(stored, request, key)
                results = []
                for statement, params, entry in zip(statements, bound, entries):
                    results.append(
                        dialect.execute_write(
                            connection,
                            statement.sql,
                            params,
                            limits,
                            many=entry.parameter_sets is not None,
                            returning=statement.returning,
                        )
                    )
                output = _output(dialect, results, statements, entries, expected, listed, limits, shape)
                if key is not None:
                    try:
                        ledger.record(dialect, connection, key, request, output)
                    except Exception as exc:
                        # Another run of the same task committed first: its output stands.
                        _rollback(dialect, connection)
                        stored = _lookup_again(source, connection, name, key, limits)
                        if stored is not None:
                            return _replayed(stored, request, key)
                        raise classify(source, exc) from None
            dialect.commit_write(connection)
        except BaseException as exc:
            _rollback(dialect, connection)
            if isinstance(exc, SqlAdapterError):
                raise
            if isinstance(exc, Exception):
                raise classify(source, exc) from None
            raise
        return {**output, "replayed": False}
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _rollback(dialect: Any, connection: Any) -> None:
    try:
        dialect.rollback_write(connection)
    except Exception:
        # The connection is broken; it must not go back to the pool in an unknown state.
        with contextlib.suppress(Exception):
            connection.invalidate()


def _lookup(source: Source, connection: Any, name: str, key: str) -> tuple[str, dict[str, Any]] | None:
    try:
        return ledger.lookup(source.dialect, connection, key)
    except Exception as exc:
        _rollback(source.dialect, connection)
        try:
            present = ledger.exists(source)
        except Exception:
            present = True
        if not present:
            raise ledger.missing(name) from None
        raise classify(source, exc) from None


def _lookup_again(source: Source, connection: Any, name: str, key: str, limits: Limits) -> tuple[str, dict[str, Any]] | None:
    dialect = source.dialect
    dialect.begin_write(connection, limits)
    try:
        return _lookup(source, connection, name, key)
    finally:
        _rollback(dialect, connection)


def _replayed(stored: tuple[str, dict[str, Any]], request: str, key: str) -> dict[str, Any]:
    digest, output = stored
    if digest != request:
        raise InputError(
            f"the idempotency key {key!r} was already used for a different write (other statements or "
            "parameters) on this database; give this write a key of its own (idempotency_key)"
        )
    return {**output, "replayed": True}


def _output(
    dialect: Any,
    results: list[tuple[int, Any, list]],
    statements: list[Statement],
    entries: list[_Entry],
    expected: tuple[int, int] | None,
    listed: bool,
    limits: Limits,
    shape: str,
) -> dict[str, Any]:
    counts = [count for count, _, _ in results]
    for i, (count, entry) in enumerate(zip(counts, entries)):
        if entry.expected is not None:
            _check_count(count, entry.expected, f"statements[{i}]")
    if expected is not None:
        _check_count(sum(counts), expected, "the statements" if listed else "the statement")
    returned: list[dict[str, Any] | None] = []
    for (count, description, rows), statement in zip(results, statements):
        if not statement.returning:
            returned.append(None)
            continue
        truncated = count > len(rows)
        columns, shaped = _to_json(dialect, description, rows, shape)
        returned.append({"columns": columns, "rows": shaped, "rowCount": len(shaped), "truncated": truncated})
    output: dict[str, Any]
    if not listed:
        output = {"rowsAffected": counts[0]}
        if returned[0] is not None:
            output.update(returned[0])
    else:
        output = {"rowsAffected": counts, "statements": [{"rowsAffected": c, **(r or {})} for c, r in zip(counts, returned)]}
    _fit_output(output, limits.output_bytes)
    return output


def _check_count(count: int, bounds: tuple[int, int], what: str) -> None:
    low, high = bounds
    if count < 0:
        raise RowCountError(
            f"{what}: the driver did not report how many rows changed, so expected_rows cannot be checked; "
            "the write was rolled back"
        )
    if not low <= count <= high:
        wanted = f"exactly {low}" if low == high else (f"at least {low}" if high >= 2**63 else f"{low} to {high}")
        raise RowCountError(
            f"{what} changed {count} row(s), expected {wanted}; the write was rolled back. Check the WHERE clause "
            "and the parameters, or the state the rows were in"
        )
