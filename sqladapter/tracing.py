"""OpenTelemetry: one span per task, when the `otel` extra is installed and an OTLP endpoint is set.

`pip install 'sqladapter[otel]'` and OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turn it on in every worker process; the exporter reads
the other OTEL_* variables itself (headers, protocol, timeout; OTEL_SERVICE_NAME names the
service, default "sqladapter-worker"). Each span carries `db.system`, `db.operation.name`,
`db.response.returned_rows`, the task's outcome and ids, and `error.type` on failure. The
statement text goes in `db.query.text` only with SQLADAPTER_TRACE_STATEMENTS=1: a query may
hold values an operator does not want in a tracing backend. Parameters are never recorded.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
STATEMENTS_VARIABLE = "SQLADAPTER_TRACE_STATEMENTS"
DEFAULT_SERVICE_NAME = "sqladapter-worker"
INSTALL_HINT = "pip install 'sqladapter[otel]'"


class _Tracing:
    """This process's tracer, when tracing is on, and whether spans carry statements."""

    tracer: Any = None
    statements = False


_tracing = _Tracing()

# The statement's first keyword, after any leading comments.
_FIRST_KEYWORD = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*([A-Za-z]+)", re.DOTALL)
_OPERATIONS = frozenset({"SELECT", "VALUES", "TABLE", "SHOW", "EXPLAIN", "PRAGMA", "DESCRIBE", "DESC", "SUMMARIZE"})


def requested() -> bool:
    """True when the environment asks for traces (an OTLP endpoint is set)."""
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def missing() -> str | None:
    """Why traces cannot be exported here (the extra is not installed), or None."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        return f"{exc}; install the extra: {INSTALL_HINT}"
    return None


def enable(provider: Any = None) -> None:
    """Record a span per task through `provider` (default: an OTLP exporter configured by OTEL_*)."""
    if provider is None:
        provider = _otlp_provider()
    from importlib.metadata import PackageNotFoundError, version

    try:
        own_version = version("sqladapter")
    except PackageNotFoundError:
        own_version = None
    _tracing.tracer = provider.get_tracer("sqladapter", own_version)
    _tracing.statements = os.environ.get(STATEMENTS_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def disable() -> None:
    _tracing.tracer = None


def enabled() -> bool:
    return _tracing.tracer is not None


def _otlp_provider() -> Any:
    import multiprocessing.util

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # A worker process ends through multiprocessing, which skips atexit handlers but runs its
    # own finalizers: the spans still in the batch are sent there.
    multiprocessing.util.Finalize(None, provider.shutdown, exitpriority=10)
    return provider


def operation(query: Any) -> str | None:
    """db.operation.name: the statement's first keyword when it is a known read-only one."""
    if not isinstance(query, str):
        return None
    match = _FIRST_KEYWORD.match(query)
    if match is None:
        return None
    keyword = match.group(1).upper()
    if keyword == "WITH":  # the guard admits only a WITH ... SELECT
        return "SELECT"
    return keyword if keyword in _OPERATIONS else None


def start(task_name: str, task_id: str | None, workflow_id: str | None, task_input: Mapping[str, Any]) -> tuple[Any, str | None]:
    """A started span for one task, and its db.operation.name (both for `finish`)."""
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {"conductor.task.name": task_name}
    if task_id:
        attributes["conductor.task.id"] = task_id
    if workflow_id:
        attributes["conductor.workflow.id"] = workflow_id
    query = task_input.get("query")
    op = operation(query)
    if op:
        attributes["db.operation.name"] = op
    if _tracing.statements and isinstance(query, str):
        attributes["db.query.text"] = query
    return _tracing.tracer.start_span(op or task_name, kind=SpanKind.CLIENT, attributes=attributes), op


def current(span: Any) -> Any:
    """A context manager making `span` the current span (driver instrumentation nests under it)."""
    from opentelemetry.trace import use_span

    return use_span(span, end_on_exit=False)


def finish(
    span: Any, op: str | None, *, dialect: str, outcome: str, error_type: str | None, rows: int | None, truncated: bool | None
) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("db.system", dialect)
    span.set_attribute("sqladapter.outcome", outcome)
    if rows is not None:
        span.set_attribute("db.response.returned_rows", rows)
    if truncated is not None:
        span.set_attribute("sqladapter.truncated", truncated)
    if op:
        span.update_name(f"{op} {dialect}")
    if error_type is not None:
        span.set_attribute("error.type", error_type)
        # The type only: a database's message may quote the task's parameters.
        span.set_status(Status(StatusCode.ERROR, error_type))
    span.end()
