"""`run_query`: the one code path from a task's input to its JSON output.

    task input -> validated request -> (dialect, engine) -> checked statement
      -> read-only, time-limited execution fetching at most max_rows + 1 rows
      -> JSON values, converter chosen once per column -> output dict

The CLI, the Conductor worker, local workflow runs and other engines all call this and
nothing below it.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import time
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from . import connections, jsontypes, statements
from .errors import (
    DatabaseUnavailableError,
    InputError,
    PermissionDeniedError,
    QueryError,
    SqlAdapterError,
    redact,
)
from .settings import Settings

log = logging.getLogger("sqladapter")

_not_none = functools.partial(operator.is_not, None)

SHAPES = ("objects", "arrays")
FETCHES = ("rows", "one", "value")
INPUT_FIELDS = frozenset(
    {"connection_string", "connection", "query", "parameters", "max_rows", "timeout_ms", "shape", "fetch"}
)


@dataclass(frozen=True)
class Request:
    """A validated task input, with the operator's caps applied."""

    connection_string: str | None
    connection: str | None
    query: str
    parameters: Any
    max_rows: int
    timeout_ms: int
    shape: str
    fetch: str


def parse_request(task_input: Mapping[str, Any], settings: Settings) -> Request:
    """Validate a task's input; raise InputError saying what to fix."""
    if not isinstance(task_input, Mapping):
        raise InputError("the task input must be an object with connection_string (or connection) and query")
    unknown = sorted(set(task_input) - INPUT_FIELDS)
    if unknown:
        raise InputError(f"unknown input field(s): {', '.join(unknown)}; accepted: {', '.join(sorted(INPUT_FIELDS))}")
    connection_string = _optional_str(task_input, "connection_string")
    connection = _optional_str(task_input, "connection")
    query = task_input.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InputError("query is required: one read-only SQL statement, e.g. SELECT * FROM people")
    parameters = task_input.get("parameters")
    if parameters is not None and not isinstance(parameters, (dict, list)):
        raise InputError("parameters must be an object (for :name placeholders) or a list (for ? placeholders)")
    shape = task_input.get("shape") or "objects"
    if shape not in SHAPES:
        raise InputError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    fetch = task_input.get("fetch") or "rows"
    if fetch not in FETCHES:
        raise InputError(f"fetch must be one of {', '.join(FETCHES)}, got {fetch!r}")
    max_rows = _positive_int(task_input, "max_rows", settings.default_max_rows)
    timeout_ms = _positive_int(task_input, "timeout_ms", settings.default_timeout_ms)
    return Request(
        connection_string=connection_string,
        connection=connection,
        query=query,
        parameters=parameters,
        max_rows=min(max_rows, settings.max_rows),
        timeout_ms=min(timeout_ms, settings.max_timeout_ms),
        shape=shape,
        fetch=fetch,
    )


def _optional_str(task_input: Mapping[str, Any], name: str) -> str | None:
    value = task_input.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _positive_int(task_input: Mapping[str, Any], name: str, default: int) -> int:
    value = task_input.get(name)
    if value is None or value == "":
        return default
    # Workflow expressions often deliver numbers as strings ("${workflow.input.limit}").
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


def run_query(task_input: Mapping[str, Any] | None = None, /, *, settings: Settings | None = None, **fields: Any) -> dict[str, Any]:
    """Run one read-only query described by a task input; return the JSON-ready output.

    Accepts the task's input as a mapping, or the same fields as keyword arguments.
    Raises a `SqlAdapterError` subclass whose `retryable` says whether to run it again.
    """
    started = time.perf_counter()
    settings = settings or Settings.from_env()
    request = parse_request(fields if task_input is None else task_input, settings)
    target = connections.resolve(request.connection_string, request.connection, settings=settings)
    try:
        statement = statements.prepare(request.query, target.dialect)
        params = statement.bind(request.parameters)
        limit = request.max_rows if request.fetch == "rows" else 1
        description, rows = _execute(target, statement.sql, params, limit + 1, request.timeout_ms)
    except SqlAdapterError as exc:
        exc.message = redact(exc.message, target.secrets)
        exc.args = (exc.message,)
        raise
    truncated = len(rows) > limit
    if truncated:
        del rows[limit:]
    columns, rows = _to_json(target.dialect, description, rows, request.shape)
    output: dict[str, Any] = {"columns": columns, "rowCount": len(rows), "truncated": truncated}
    if request.fetch == "rows":
        output["rows"] = rows
    elif request.fetch == "one":
        output["row"] = rows[0] if rows else None
    else:
        first = rows[0] if rows else None
        output["value"] = None if first is None else (first[0] if request.shape == "arrays" else first[columns[0]["name"]])
    output["dialect"] = target.dialect.name
    output["elapsedMs"] = round((time.perf_counter() - started) * 1000, 3)
    _fit_output(output, settings.max_output_bytes)
    return output


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except TypeError:  # a value outside orjson's types (e.g. an int past 64 bits from a custom converter)
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode())


def _fit_output(output: dict[str, Any], budget: int) -> None:
    """Drop trailing rows until the output's JSON fits `budget` bytes, and mark it truncated.

    Workflow engines refuse or offload big task outputs (Conductor past 3 MB), so a result
    over the budget returns its first rows with `truncated: true` rather than failing.
    """
    size = _json_size(output)
    if size <= budget:
        return
    rows = output.get("rows")
    if rows:
        fixed = size - _json_size(rows) + 2  # everything but the rows, plus the brackets
        kept, used = 0, fixed
        for row in rows:
            used += _json_size(row) + (1 if kept else 0)
            if used > budget:
                break
            kept += 1
        if kept:
            del rows[kept:]
            output["rowCount"] = kept
            output["truncated"] = True
            return
    raise InputError(
        f"the output is {size} bytes, over the {budget}-byte output budget (SQLADAPTER_MAX_OUTPUT_BYTES) "
        "even with a single row; select fewer or narrower columns"
    )


def _execute(target: connections.Target, sql: str, params: Any, limit: int, timeout_ms: int) -> tuple[Any, list]:
    dialect, engine = target.dialect, target.engine
    # A pooled connection may have died while idle (server restart, idle timeout). The query
    # is read-only, so running it again on a fresh connection is safe: once, and only when the
    # failed connection had already served a query before.
    for attempt in (1, 2):
        try:
            connection, kept = connections.checkout(target)
        except Exception as exc:
            raise _classify(target, exc) from None
        try:
            with dialect.time_limit(connection, timeout_ms):
                description, rows = dialect.fetch(connection, sql, params, limit)
        except Exception as exc:
            disconnected = _is_disconnect(engine, exc, connection)
            reused = connection.info.get("sqladapter.used", False)
            if disconnected:
                connection.invalidate(exc)
            connections.checkin(target, connection, kept, failed=True)
            if disconnected and reused and attempt == 1:
                log.info("%s: pooled connection was lost; retrying once on a new one", dialect.name)
                continue
            raise _classify(target, exc) from None
        if connection.is_valid:
            info = connection.info
            if "sqladapter.used" not in info:
                info["sqladapter.used"] = True
        connections.checkin(target, connection, kept)
        return description, rows if isinstance(rows, list) else list(rows)
    raise AssertionError("unreachable")


def _is_disconnect(engine: Any, exc: Exception, connection: Any) -> bool:
    dbapi = engine.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return False
    try:
        return bool(engine.dialect.is_disconnect(exc, connection.dbapi_connection, None))
    except Exception:
        return False


def _classify(target: connections.Target, exc: BaseException) -> SqlAdapterError:
    """One exception type for whatever the driver raised, with the secrets taken out."""
    if isinstance(exc, SqlAdapterError):
        error = exc
    else:
        error = target.dialect.classify(exc) or _default_classification(exc)
    error.message = redact(error.message, target.secrets)
    error.args = (error.message,)
    return error


def _default_classification(exc: BaseException) -> SqlAdapterError:
    # PEP 249 classes, for dialects that leave classification to the core.
    kind = type(exc).__name__
    message = f"{kind}: {str(exc).strip() or kind}"
    if kind in ("OperationalError", "InterfaceError"):
        return DatabaseUnavailableError(message)
    if "permission" in message.lower() or "denied" in message.lower():
        return PermissionDeniedError(message)
    if isinstance(exc, Exception):
        return QueryError(message)
    return SqlAdapterError(message)


def _to_json(dialect: Any, description: Any, rows: list, shape: str) -> tuple[list[dict[str, str]], list]:
    names = [column[0] for column in description]
    width = len(names)
    if shape != "arrays" and len(set(names)) != width:
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise InputError(
            f"the result has more than one column named {', '.join(map(repr, duplicated))}; "
            "give each an alias (AS ...) or ask for shape: arrays"
        )
    # Column by column: one converter per column, chosen from its first non-null value, and
    # columns already JSON are never copied.
    columns_values: list[Any] = list(zip(*rows)) if rows else [()] * width
    samples = [next(filter(_not_none, values), None) for values in columns_values]
    columns = [{"name": names[i], "type": dialect.column_type(description[i], samples[i])} for i in range(width)]
    if dialect.typed_columns:
        converted = [
            None if sample is None else jsontypes.typed_column(values, dialect.converter(column, sample))
            for column, sample, values in zip(description, samples, columns_values)
        ]
    else:
        converted = [
            None if sample is None else jsontypes.untyped_column(values)
            for sample, values in zip(samples, columns_values)
        ]
    table: Any = rows
    if any(values is not None for values in converted):
        table = zip(*[original if values is None else values for original, values in zip(columns_values, converted)])
    if shape == "arrays":
        return columns, list(map(list, table))
    return columns, list(map(dict, map(functools.partial(zip, names), table)))
