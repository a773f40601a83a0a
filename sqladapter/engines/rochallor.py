"""The Rochallor binding: the `query_sql` job handler and the SDK Runner that serves it.

Needs the `rochallor` extra (`pip install "sqladapter[rochallor]"`, package `workflow_sdk`).
A job's inputs are the query fields found among the instance's variables
(`connection_string` or `connection`, `query`, `parameters`, ...); its output goes back under
one variable (default `sqlResult`) so it never overwrites the instance's other variables.
Terminal errors raise the SDK's NonRetryableError, retryable ones a plain exception.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import NonRetryableError
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.runner.runner import Runner

from .. import execute
from ..errors import SqlAdapterError, redact
from ..query import INPUT_FIELDS
from ..runtime import Runtime, default
from . import TASK_NAME, WRITE_TASK_NAME

log = logging.getLogger("sqladapter.worker")

DEFAULT_RESULT_VARIABLE = "sqlResult"
DEFAULT_PARALLELISM = 8


class RetryableQueryError(Exception):
    """A query failure the engine should retry (database down, timeout, lock)."""


def job_input(variables: Mapping[str, Any] | None, fields: frozenset[str] = INPUT_FIELDS) -> dict[str, Any]:
    """The run_query (or execute_sql) input among a job's variables: those fields, nothing else."""
    # A job sees all of its instance's variables (other steps' results included), so
    # unknown keys are expected here and are left out rather than refused.
    return {key: value for key, value in (variables or {}).items() if key in fields}


def idempotency_key(job: Mapping[str, Any]) -> str:
    """The default idempotency key of a write job: its workflow instance and its step.

    The engine hands a step's job out again (a lease that expired, a retry) under the same
    instance and step, so the write then replays instead of running twice.
    """
    return f"rochallor:{job.get('instanceId')}:{job.get('stepId')}"


def make_handler(
    result_variable: str = DEFAULT_RESULT_VARIABLE, runtime: Runtime | None = None, *, write: bool = False
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A job handler running the job's query on `runtime` (the default one if none) and
    returning {result_variable: output}; with `write`, the execute_sql handler instead."""

    def query_sql(job: dict[str, Any]) -> dict[str, Any]:
        try:
            if write:
                fields = job_input(job.get("variables"), execute.INPUT_FIELDS)
                output = (runtime or default()).execute(fields, default_key=idempotency_key(job))
            else:
                output = (runtime or default()).run(job_input(job.get("variables")))
        except SqlAdapterError as exc:
            message = f"{exc.type}: {redact(exc.message)}"
            if exc.retryable:
                raise RetryableQueryError(message) from None
            raise NonRetryableError(message) from None
        except Exception:
            # A bug, not a database answer: the traceback stays in the worker's log, URL passwords out.
            log.error("job %s (%s): unexpected error\n%s", job.get("id"), job.get("jobType"), redact(traceback.format_exc()))
            raise RetryableQueryError(
                f"unexpected error in the sqladapter worker (job {job.get('id')}); the worker's log has the details"
            ) from None
        return {result_variable: output}

    return query_sql


class DrainingRunner(Runner):
    """The SDK Runner, except that SIGTERM/SIGINT stop polling and let running jobs report first.

    The SDK's own stop abandons jobs in flight (their leases expire and the engine hands them
    out again); this one stops polling, waits up to `grace_seconds` for the handlers to
    finish and report, and only then stops the SDK's loop.
    """

    def __init__(self, *args: Any, grace_seconds: float = 30.0, on_stop: Callable[[], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._grace_seconds = grace_seconds
        self._draining_since: float | None = None
        self._on_stop = on_stop

    def _install_signal_handlers(self, stop_event: threading.Event) -> None:  # type: ignore[override]
        def drain(signum: int, frame: object) -> None:
            if self._draining_since is None:
                self._draining_since = time.monotonic()
                if self._on_stop:
                    self._on_stop()

        signal.signal(signal.SIGTERM, drain)
        signal.signal(signal.SIGINT, drain)

    def _poll_and_dispatch(self, executor: ThreadPoolExecutor, in_flight: list[Future[None]], job_types: list[str]) -> None:
        if self._draining_since is None:
            return super()._poll_and_dispatch(executor, in_flight, job_types)
        in_flight[:] = [future for future in in_flight if not future.done()]
        if not in_flight or time.monotonic() - self._draining_since > self._grace_seconds:
            self._stop_event.set()


def serve(
    url: str,
    task_names: list[str],
    *,
    worker_id: str | None = None,
    parallelism: int = DEFAULT_PARALLELISM,
    result_variable: str = DEFAULT_RESULT_VARIABLE,
    poll_interval: float = 0.5,
    grace_seconds: float = 30.0,
    announce: Callable[[str], None] = print,
    runtime: Runtime | None = None,
) -> int:
    """Serve query_sql (and aliases) to the Rochallor engine at `url` until SIGTERM/SIGINT; return 0."""
    runtime = runtime or default()
    handlers = HandlerRegistry()
    handler = make_handler(result_variable, runtime)
    for name in task_names or [TASK_NAME]:
        # Only a job of exactly the write type writes; every other name is a query alias.
        handlers.register(name, make_handler(result_variable, runtime, write=True) if name == WRITE_TASK_NAME else handler)
    worker_id = worker_id or socket.gethostname()
    client = RestEngineClient(url)
    runner = DrainingRunner(
        client,
        handlers,
        worker_id,
        parallelism=parallelism,
        poll_interval=poll_interval,
        grace_seconds=grace_seconds,
        on_stop=lambda: announce(f"sqladapter worker: stopping; running jobs get up to {grace_seconds:g}s to finish"),
    )
    announce(
        f"sqladapter worker: server {redact(url)} (rochallor); worker id {worker_id}; "
        f"job types {', '.join(handlers.job_types())} ({parallelism} at once); result variable {result_variable}; "
        f"dialects {', '.join(sorted(runtime.registry.by_name)) or 'none'}"
    )
    try:
        runner.run()
    finally:
        client.close()
    announce("sqladapter worker: stopped")
    return 0
