"""The query path: the one way from a task's input to its JSON output.

    task input -> validated fields -> (dialect, pooled engine) -> checked statement
      -> read-only, time-limited execution fetching at most max_rows + 1 rows
      -> JSON values, converter chosen once per column -> output dict

`Runtime.run` calls `run` with itself; the CLI, the Conductor worker, local workflow runs and
other engines all go through a Runtime and nothing below it.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import operator
import time
from collections import abc
from typing import TYPE_CHECKING, Any, Callable, Mapping

import orjson

from . import deadlines, error_rules, jsontypes
from .dialect import ABANDONED, Dialect, Limits
from .errors import (
    ConnectionConfigError,
    InputError,
    QueryTimeoutError,
    SqlAdapterError,
    redact,
)
from .settings import Settings

if TYPE_CHECKING:
    from .connections import Pools, Source
    from .runtime import Runtime

log = logging.getLogger("sqladapter")

_not_none = functools.partial(operator.is_not, None)
_first = operator.itemgetter(0)

SHAPES = ("objects", "arrays")
FETCHES = ("rows", "one", "value")
INPUT_FIELDS = frozenset({"connection_string", "connection", "query", "parameters", "max_rows", "timeout_ms", "shape", "fetch"})


def _parse(task_input: Mapping[str, Any], settings: Settings) -> tuple[Any, ...]:
    """The task's fields, validated, with the operator's caps applied; InputError saying what to fix."""
    if type(task_input) is not dict and not isinstance(task_input, abc.Mapping):
        raise InputError("the task input must be an object with connection_string (or connection) and query")
    if not INPUT_FIELDS.issuperset(task_input):
        unknown = sorted(set(task_input) - INPUT_FIELDS)
        raise InputError(f"unknown input field(s): {', '.join(unknown)}; accepted: {', '.join(sorted(INPUT_FIELDS))}")
    get = task_input.get
    connection_string = get("connection_string")
    if connection_string is not None and type(connection_string) is not str:
        connection_string = _optional_str(task_input, "connection_string")
    connection = get("connection")
    if connection is not None and type(connection) is not str:
        connection = _optional_str(task_input, "connection")
    query = get("query")
    if not isinstance(query, str) or not query or query.isspace():
        raise InputError("query is required: one read-only SQL statement, e.g. SELECT * FROM people")
    parameters = get("parameters")
    if parameters is not None and not isinstance(parameters, (dict, list)):
        raise InputError("parameters must be an object (for :name placeholders) or a list (for ? placeholders)")
    shape = get("shape") or "objects"
    if shape not in SHAPES:
        raise InputError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    fetch = get("fetch") or "rows"
    if fetch not in FETCHES:
        raise InputError(f"fetch must be one of {', '.join(FETCHES)}, got {fetch!r}")
    max_rows = get("max_rows")
    if max_rows is None:
        max_rows = settings.default_max_rows
    elif type(max_rows) is not int or max_rows < 1:
        max_rows = _positive_int(task_input, "max_rows", settings.default_max_rows)
    timeout_ms = get("timeout_ms")
    if timeout_ms is None:
        timeout_ms = settings.default_timeout_ms
    elif type(timeout_ms) is not int or timeout_ms < 1:
        timeout_ms = _positive_int(task_input, "timeout_ms", settings.default_timeout_ms)
    return (
        connection_string,
        connection,
        query,
        parameters,
        min(max_rows, settings.max_rows),
        min(timeout_ms, settings.max_timeout_ms),
        shape,
        fetch,
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


def run(runtime: Runtime, task_input: Mapping[str, Any]) -> dict[str, Any]:
    """Run one read-only query described by a task input on `runtime`; return the JSON-ready output."""
    started = time.perf_counter()
    settings = runtime.settings
    connection_string, connection, query, parameters, max_rows, timeout_ms, shape, fetch = _parse(task_input, settings)
    _check_size(query, settings.max_query_bytes)
    pools = runtime.pools
    source = pools.resolve(connection_string, connection)
    try:
        try:
            allowed = pools.allowed_functions(source)
        except Exception as exc:
            raise classify(source, exc, connecting=True) from None
        statement = runtime.statements.get(query, source.dialect, allowed)
        params = statement.bind(parameters)
        limit = max_rows if fetch == "rows" else 1
        limits = Limits(limit + 1, timeout_ms, settings.max_output_bytes, time.monotonic() + timeout_ms / 1000)
        sql = statement.limited(limits.rows) if source.dialect.row_limit_in_sql else statement.sql
        description, rows = _execute(runtime, source, sql, params, limits)
    except SqlAdapterError as exc:
        exc.message = redact(exc.message, source.secrets)
        exc.args = (exc.message,)
        raise
    truncated = len(rows) > limit
    if truncated:
        del rows[limit:]
    columns, rows = _to_json(source.dialect, description, rows, shape)
    output: dict[str, Any] = {"columns": columns, "rowCount": len(rows), "truncated": truncated}
    if fetch == "rows":
        output["rows"] = rows
    elif fetch == "one":
        output["row"] = rows[0] if rows else None
    else:
        first = rows[0] if rows else None
        output["value"] = None if first is None else (first[0] if shape == "arrays" else first[columns[0]["name"]])
    output["dialect"] = source.dialect.name
    output["elapsedMs"] = round((time.perf_counter() - started) * 1000, 3)
    _fit_output(output, settings.max_output_bytes)
    return output


def _check_size(query: str, max_bytes: int) -> None:
    # Parsing is work done before any time limit applies, so it is bounded by size instead.
    if len(query) > max_bytes // 4 and len(query.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InputError(
            f"the query is {len(query.encode('utf-8', 'surrogatepass'))} bytes, over the {max_bytes}-byte "
            "limit (SQLADAPTER_MAX_QUERY_BYTES): pass data as parameters, or raise the limit on the worker"
        )


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
        # Even no row at all is an answer: a request for a huge result (rows of a megabyte
        # each) is truncated like any other, not a failed workflow.
        if kept or fixed <= budget:
            del rows[kept:]
            output["rowCount"] = kept
            output["truncated"] = True
            return
    raise InputError(
        f"the output is {size} bytes, over the {budget}-byte output budget (SQLADAPTER_MAX_OUTPUT_BYTES) "
        "even with a single row; select fewer or narrower columns"
    )


def _execute(runtime: Runtime, source: Source, sql: str, params: Any, limits: Limits) -> tuple[Any, list]:
    dialect, engine, pools = source.dialect, source.engine, runtime.pools
    # Only a dialect that can end a statement from outside is watched past its own limit.
    ends_from_outside = type(dialect).cancel is not Dialect.cancel
    # A pooled connection may have died while idle (server restart, idle timeout). The query
    # is read-only, so running it again on a fresh connection is safe: once, and only when the
    # failed connection had already served a query before.
    for attempt in (1, 2):
        try:
            connection, kept = pools.checkout(source)
        except Exception as exc:
            raise classify(source, exc, connecting=True) from None
        raw = connection.dbapi_connection
        if ends_from_outside:

            def cancel(stage: int, raw: Any = raw) -> None:
                dialect.cancel(engine, raw, end_session=stage >= 2)

            token, overrun = runtime.watchdog.watch(limits.deadline + deadlines.GRACE_SECONDS, cancel)
        else:
            token, overrun = None, _NOT_WATCHED
        try:
            with dialect.time_limit(connection, limits):
                description, rows = dialect.fetch(connection, sql, params, limits)
        except Exception as exc:
            if token is not None:
                runtime.watchdog.release(token)
            if overrun.stage:
                raise _overran(pools, source, connection, kept, limits.timeout_ms, overrun) from None
            disconnected = _is_disconnect(engine, exc, connection)
            reused = connection.info.get(_USED, False)
            if disconnected:
                connection.invalidate(exc)
            pools.checkin(source, connection, kept, failed=True)
            if disconnected and reused and attempt == 1:
                log.info("%s: pooled connection was lost; retrying once on a new one", dialect.name)
                continue
            raise classify(source, exc) from None
        if token is not None:
            runtime.watchdog.release(token)
        if overrun.stage:  # an answer that came back after the cancel is not the query's answer
            raise _overran(pools, source, connection, kept, limits.timeout_ms, overrun)
        if connection.dbapi_connection is not None:  # not invalidated by the dialect
            info = connection.info
            if _USED not in info:
                info[_USED] = True
            if kept:
                return description, rows if type(rows) is list else list(rows)
        pools.checkin(source, connection, kept)
        return description, rows if type(rows) is list else list(rows)
    raise AssertionError("unreachable")


#: connection.info key: the connection has served a query (so a failure may be a stale connection).
_USED = "sqladapter.used"
_NOT_WATCHED = deadlines.Overrun()  # stage 0 for good: a query no watchdog looks after


def _overran(pools: Pools, source: Source, connection: Any, kept: bool, timeout_ms: int, overrun: Any) -> QueryTimeoutError:
    # The database did not stop the query at its own limit; the watchdog ended it from outside.
    # The connection's state is unknown after that, so it is not used again.
    if connection.dbapi_connection is not None and not connection.info.get(ABANDONED):
        connection.invalidate()
    pools.checkin(source, connection, kept, failed=True)
    how = "cancelled the statement" if overrun.stage < 2 else "ended the session"
    return QueryTimeoutError(
        f"{source.dialect.name}: the query ran past its {timeout_ms} ms time limit and the database did not stop it; "
        f"the worker {how}. Make the query cheaper (a narrower WHERE, fewer rows or smaller values) or raise timeout_ms"
    )


def _is_disconnect(engine: Any, exc: Exception, connection: Any) -> bool:
    dbapi = engine.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return False
    try:
        return bool(engine.dialect.is_disconnect(exc, connection.dbapi_connection, None))
    except Exception:
        return False


def classify(source: Source, exc: BaseException, *, connecting: bool = False) -> SqlAdapterError:
    """One exception type for whatever the driver raised, with the secrets taken out."""
    if isinstance(exc, SqlAdapterError):
        error = exc
    elif connecting and isinstance(exc, (TypeError, ValueError, LookupError, OSError)) and source.dialect.classify(exc) is None:
        # Raised by the driver's connect() before any server answered: an option it does not
        # know, a value it cannot read, a certificate file that is not there. The same
        # connection string can never work, so it is not worth retrying.
        error = ConnectionConfigError(
            f"{source.dialect.name}: the driver refused the connection's options ({type(exc).__name__}: "
            f"{str(exc).strip() or 'no detail'}); fix the connection's URL"
        )
    else:
        error = source.dialect.classify(exc) or error_rules.classify_by_default(source.dialect.name, exc)
    error.message = redact(error.message, source.secrets)
    error.args = (error.message,)
    return error


def _to_json(dialect: Any, description: Any, rows: list, shape: str) -> tuple[list[dict[str, str]], list]:
    names = tuple(map(_first, description))
    width = len(names)
    if shape != "arrays" and len(set(names)) != width:
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise InputError(
            f"the result has more than one column named {', '.join(map(repr, duplicated))}; "
            "give each an alias (AS ...) or ask for shape: arrays"
        )
    # Column by column: one converter per column, chosen from its first non-null value. The
    # rows are never transposed or copied for columns already JSON; only a column that needs
    # converting is taken out, converted, and zipped back in.
    getters = _getters(width)
    if rows and None not in rows[0]:
        samples = list(rows[0])
    else:
        samples = [next(filter(_not_none, map(get, rows)), None) for get in getters]
    column_type = dialect.column_type
    columns = [{"name": name, "type": column_type(column, sample)} for name, column, sample in zip(names, description, samples)]
    converted: dict[int, list[Any]] = {}
    if dialect.typed_columns:
        for i, sample in enumerate(samples):
            convert = None if sample is None else dialect.converter(description[i], sample)
            if convert is not None:
                values = jsontypes.typed_column(list(map(getters[i], rows)), convert)
                if values is not None:
                    converted[i] = values
    elif not jsontypes.all_json_kinds(rows):
        for i, sample in enumerate(samples):
            if sample is not None:
                values = jsontypes.untyped_column(list(map(getters[i], rows)))
                if values is not None:
                    converted[i] = values
    table: Any = rows
    if converted:
        table = zip(*[converted[i] if i in converted else map(getters[i], rows) for i in range(width)])
    if shape == "arrays":
        return columns, list(map(list, table))
    return columns, _objects(names, table, len(rows))


def _getters(width: int) -> tuple[Callable[[Any], Any], ...]:
    if width < len(_GETTERS):
        return _GETTERS[width]
    return tuple(operator.itemgetter(i) for i in range(width))


# Column getters for results up to 64 columns wide, made once: making them per result costs a
# point lookup 2.6 us of its 30.
_GETTERS = tuple(tuple(operator.itemgetter(i) for i in range(width)) for width in range(65))


# Results from this many rows up are shaped by `_objects_compiled`.
_COMPILED_FROM_ROWS = 256


def _objects(names: tuple[Any, ...], table: Any, count: int) -> list[dict[str, Any]]:
    """The rows as objects keyed by column name."""
    if count >= _COMPILED_FROM_ROWS and all(type(name) is str for name in names):
        return list(itertools.starmap(_objects_compiled(names), table))
    return [dict(zip(names, row)) for row in table]


def _objects_compiled(names: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """A function making one row's object from its values, the column names as constants.

    Kept for large results only: a dict display with constant keys builds in one step, 1.6x as
    fast as dict(zip(names, row)) (100,000 rows of 10 columns: 43 ms against 69 ms), while
    compiling it costs about 50 us, more than a point lookup's whole shaping. repr() of a str
    is always a literal of that same str.
    """
    parameters = ", ".join(f"_{i}" for i in range(len(names)))
    items = ", ".join(f"{name!r}: _{i}" for i, name in enumerate(names))
    return eval(f"lambda {parameters}: {{{items}}}", {"__builtins__": {}})
