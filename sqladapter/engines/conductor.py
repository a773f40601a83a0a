"""The Conductor binding: the `query_sql` worker function, and the TaskHandler that serves it.

Conductor OSS, Orkes Conductor and Oracle MicroTx Workflows schedule the task; the
conductor-python SDK polls it. This module deliberately has no `from __future__ import
annotations`: the SDK inspects the worker function's annotations at run time and fails every
task when they are strings.

Stopping: the SDK's `stop_processes` kills worker processes mid-task. `serve` instead sends
each worker process SIGTERM, on which the process stops polling, ends the update-v2 chain
after the task in hand, reports every task it holds, and exits; only a process still busy
after the grace period is killed. What that needs of the SDK beyond its public API is in
`conductor_sdk.py`, one function per internal; tests/test_worker.py fails if they change meaning.

Operating: the workers extend their tasks' leases through the SDK (a query may run past the
task definition's responseTimeoutSeconds without being handed to another worker), and
`serve` can add Prometheus metrics with /health and /ready (sqladapter.metrics), JSON logs
(sqladapter.logs) and OpenTelemetry spans (sqladapter.tracing) in every worker process.
"""

import logging
import signal
import sys
import threading
import time
import traceback
import warnings
from types import MappingProxyType
from typing import Any, Callable, Mapping

from conductor.client.automator.task_handler import TaskHandler
from conductor.client.automator.task_runner import TaskRunner
from conductor.client.configuration.configuration import Configuration
from conductor.client.http.models.task import Task
from conductor.client.http.models.task_def import TaskDef
from conductor.client.http.models.task_exec_log import TaskExecLog
from conductor.client.http.models.task_result import TaskResult
from conductor.client.http.models.task_result_status import TaskResultStatus
from conductor.client.worker.worker import Worker
from conductor.client.worker.worker_config import resolve_worker_config

from .. import execute, logs, metrics, tracing
from ..errors import SqlAdapterError, redact
from ..query import INPUT_FIELDS
from ..runtime import Runtime, default
from ..settings import Settings
from . import TASK_NAME, WRITE_TASK_NAME, conductor_sdk

log = logging.getLogger("sqladapter.worker")

DEFAULT_THREADS = 4
DEFAULT_POLL_INTERVAL_MS = 100
DEFAULT_GRACE_SECONDS = 30.0
DEFAULT_OWNER_EMAIL = "sqladapter@example.com"


def task_input(input_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run_query input of a Conductor task: its inputData without engine-reserved `_` keys."""
    # Conductor fills inputData from the task's inputParameters, so any other key is the
    # user's typo and run_query refuses it; keys starting with "_" are the engine's own
    # (Orkes adds `_createdBy` and the like) and never a query field.
    return {key: value for key, value in (input_data or {}).items() if not key.startswith("_")}


# In a worker process with metrics or JSON logs on (see _setup_process), or with tracing
# enabled; the task path without them stays as short as it was.
class _WorkerProcess:
    """What `serve` turned on in this SDK worker process, and its stop: found by the signal
    handler and the runner's hooks, which the SDK calls with no handle of ours."""

    def __init__(self) -> None:
        self.observing = False
        self.metrics: metrics.WorkerMetrics | None = None
        self.stopping = threading.Event()
        self.runner: TaskRunner | None = None


_process = _WorkerProcess()

_OUTCOMES = MappingProxyType(
    {
        TaskResultStatus.COMPLETED: "completed",
        TaskResultStatus.FAILED: "failed",
        TaskResultStatus.FAILED_WITH_TERMINAL_ERROR: "failed_terminal",
    }
)


def execute_query_task(task: Task) -> TaskResult:
    """Run a `query_sql` task on the process's default Runtime (the SDK's worker function)."""
    return run_task(default(), task)


def execute_write_task(task: Task) -> TaskResult:
    """Run an `execute_sql` task on the process's default Runtime (the SDK's worker function)."""
    return run_task(default(), task)


def idempotency_key(task: Task) -> str:
    """The default idempotency key of a write task: its workflow, its reference name, its loop iteration.

    Conductor keeps all three when it retries a task (a new task id, the same reference), and
    when a workflow is restarted or rerun under the same workflow id: the write then replays.
    """
    key = f"conductor:{task.workflow_instance_id}:{task.reference_task_name}"
    if task.iteration:
        key += f":{task.iteration}"
    return key


def _is_write(task: Task) -> bool:
    return (task.task_def_name or task.task_type) == WRITE_TASK_NAME


def run_task(runtime: Runtime, task: Task) -> TaskResult:
    """Run a `query_sql` task: COMPLETED with the query output, else FAILED or FAILED_WITH_TERMINAL_ERROR.

    A task of type `execute_sql` (and only that type) runs as a write (`Runtime.execute`)
    under its default idempotency key.
    """
    if _process.observing or tracing.enabled():
        return _observed(runtime, task)
    return _execute(runtime, task, task_input(task.input_data))


def _observed(runtime: Runtime, task: Task) -> TaskResult:
    """execute_query_task, counted in the metrics, logged as one JSON line, traced as one span."""
    name = task.task_def_name or task.task_type or "unknown"
    query_input = task_input(task.input_data)
    span = op = None
    if tracing.enabled():
        span, op = tracing.start(name, task.task_id, task.workflow_instance_id, query_input)
    if _process.metrics is not None:
        _process.metrics.task_started(name)
    started = time.perf_counter()
    try:
        if span is not None:
            with tracing.current(span):
                result = _execute(runtime, task, query_input)
        else:
            result = _execute(runtime, task, query_input)
    finally:
        elapsed = time.perf_counter() - started
    try:
        _record(runtime, task, name, query_input, result, elapsed, span, op)
    except Exception as exc:
        # The result stands whatever happens to its record.
        log.warning("task %s: recording its metrics, log line or span failed: %s", task.task_id, type(exc).__name__)
    return result


def _record(
    runtime: Runtime,
    task: Task,
    name: str,
    query_input: dict[str, Any],
    result: TaskResult,
    elapsed: float,
    span: Any,
    op: str | None,
) -> None:
    output = result.output_data if isinstance(result.output_data, dict) else {}
    outcome = _OUTCOMES.get(result.status, "failed")
    error = output.get("error") if outcome != "completed" else None
    error_type = (error.get("type") if isinstance(error, dict) else None) or (None if outcome == "completed" else "unknown")
    if outcome == "completed":
        dialect = output.get("dialect") or metrics.UNKNOWN_DIALECT
        rows, truncated = output.get("rowCount"), bool(output.get("truncated"))
    else:
        dialect, rows, truncated = metrics.dialect_of(runtime, query_input), None, None
    if _process.metrics is not None:
        _process.metrics.task_finished(name, dialect, outcome, elapsed, output if outcome == "completed" else None, error_type)
        _process.metrics.record_connections(runtime.pools.open_connections())
    if span is not None:
        tracing.finish(span, op, dialect=dialect, outcome=outcome, error_type=error_type, rows=rows, truncated=truncated)
    if logs.json_enabled():
        logs.task(
            task_id=task.task_id,
            workflow_id=task.workflow_instance_id,
            task_name=name,
            dialect=dialect,
            status=str(result.status),
            elapsed_ms=elapsed * 1000,
            error_type=error_type,
            rows=rows,
            truncated=truncated,
        )


def _execute(runtime: Runtime, task: Task, query_input: dict[str, Any]) -> TaskResult:
    result = TaskResult(task_id=task.task_id, workflow_instance_id=task.workflow_instance_id, worker_id=task.worker_id)
    try:
        if _is_write(task):
            output = runtime.execute(query_input, default_key=idempotency_key(task))
        else:
            output = runtime.run(query_input)
    except SqlAdapterError as exc:
        return failed_result(result, exc)
    except Exception:
        # A bug, not a database answer: the traceback goes to the worker log only, since it
        # may quote values from the connection or the rows; URL passwords are taken out.
        if logs.json_enabled():
            # Type and frames only: the exception's message may quote values.
            log.error("task %s (%s): unexpected error", task.task_id, task.task_def_name, exc_info=True)
        else:
            log.error("task %s (%s): unexpected error\n%s", task.task_id, task.task_def_name, redact(traceback.format_exc()))
        message = f"unexpected error in the sqladapter worker (task {task.task_id}); the worker's log has the details"
        result.status = TaskResultStatus.FAILED
        result.reason_for_incompletion = message
        result.output_data = {"error": {"type": "internal", "message": message, "retryable": True, "code": None}}
        _log(result, message)
        return result
    result.status = TaskResultStatus.COMPLETED
    result.output_data = output
    if output.get("replayed"):
        _log(result, "replayed: this write was committed by an earlier run of the task; its stored output is returned")
    if output.get("truncated"):
        _log(
            result,
            f"output truncated to {output['rowCount']} rows by max_rows or SQLADAPTER_MAX_OUTPUT_BYTES; "
            "page with LIMIT/OFFSET or a WHERE clause to get the rest",
        )
    return result


def failed_result(result: TaskResult, exc: SqlAdapterError) -> TaskResult:
    """Fill `result` for a failed query: retryable errors FAILED, others FAILED_WITH_TERMINAL_ERROR."""
    message = redact(exc.message)
    error = {**exc.to_dict(), "message": message}
    result.status = TaskResultStatus.FAILED if exc.retryable else TaskResultStatus.FAILED_WITH_TERMINAL_ERROR
    result.reason_for_incompletion = message
    result.output_data = {"error": error}
    _log(result, f"{exc.type}: {message}")
    if exc.retryable:
        _log(result, "retryable: Conductor runs the task again per its definition's retryCount and retryDelaySeconds")
    else:
        _log(result, "terminal: running the same input again cannot succeed; fix the task input or the query")
    return result


def _log(result: TaskResult, line: str) -> None:
    # TaskResult.log leaves the time empty; the server shows task logs by createdTime (epoch ms).
    result.logs = (result.logs or []) + [TaskExecLog(line, result.task_id, int(time.time() * 1000))]


def task_definition(name: str = TASK_NAME, owner_email: str = DEFAULT_OWNER_EMAIL, settings: Settings | None = None) -> TaskDef:
    """The task definition `register` and `worker --register` send for task type `name`."""
    settings = settings or Settings.from_env()
    # A query may run up to the operator's timeout cap; the server must not declare the
    # worker dead before that query has had the chance to finish and report.
    response_timeout = int(settings.max_timeout_ms / 1000) + 30
    retry_count = 3
    if name == WRITE_TASK_NAME:
        description = "Run checked INSERT/UPDATE/DELETE statements in one transaction, exactly once per task (sqladapter)"
        retry_delay, inputs = 1, execute.INPUT_FIELDS
        outputs = ["rowsAffected", "statements", "columns", "rows", "rowCount", "truncated", "replayed", "dialect"]
    else:
        description = "Run one parameterized, read-only SQL query and return JSON rows (sqladapter)"
        retry_delay, inputs = 5, INPUT_FIELDS
        outputs = ["columns", "rowCount", "truncated", "rows", "row", "value", "dialect"]
    return TaskDef(
        name=name,
        description=description,
        owner_email=owner_email,
        retry_count=retry_count,
        retry_logic="EXPONENTIAL_BACKOFF",
        retry_delay_seconds=retry_delay,
        backoff_scale_factor=2,
        response_timeout_seconds=response_timeout,
        timeout_seconds=(retry_count + 1) * response_timeout + 5 * (2**retry_count),
        timeout_policy="TIME_OUT_WF",
        input_keys=sorted(inputs),
        output_keys=[*outputs, "elapsedMs", "error"],
    )


# -- stopping a worker process without dropping tasks -----------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    _process.stopping.set()
    _process.runner = _process.runner or conductor_sdk.find_runner(frame)
    if _process.runner is not None:
        # Each in-flight chain of task updates ends with the task it holds.
        conductor_sdk.end_update_chains(_process.runner)


def _setup_process(worker: "QueryWorker") -> None:
    """Turn on, in this worker process, what `serve` asked for: metrics, JSON logs; and tracing."""
    options = worker.observability
    if options.get("log_format") == "json":
        logs.configure("json", Configuration().log_level)
    if options.get("metrics"):
        _process.metrics = metrics.worker_metrics()
        _process.metrics.process_started(worker.task_definition_name, int(effective_settings(worker)["thread_count"]))
    if tracing.requested():
        reason = tracing.missing()
        if reason is None:
            tracing.enable()
        else:
            log.warning("sqladapter worker: OTEL_EXPORTER_OTLP_ENDPOINT is set but no spans are exported: %s", reason)
    _process.observing = _process.metrics is not None or logs.json_enabled() or tracing.enabled()


class QueryWorker(Worker):
    """The SDK's Worker for one task name, plus a stop that drains instead of killing."""

    #: What `serve` turns on in the worker process: {"metrics": bool, "log_format": "text" | "json"}.
    observability: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Unpickling by multiprocessing's spawn bootstrap runs in the worker process's main
        # thread before its TaskRunner starts: the one place to install that process's handler.
        if threading.current_thread() is threading.main_thread() and conductor_sdk.unpickled_by_spawn():
            signal.signal(signal.SIGTERM, _on_sigterm)
            _setup_process(self)

    @property
    def paused(self) -> bool:
        if _process.metrics is not None:
            # The runner's loop reads this right before each poll: its heartbeat for /health.
            _process.metrics.loop_ran(self.task_definition_name)
        if not _process.stopping.is_set():
            return self._paused
        if threading.current_thread() is threading.main_thread():
            self._finish_when_drained()
        return True

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = bool(value)

    @staticmethod
    def _finish_when_drained() -> None:
        # Called by the runner's main loop right before it would poll, so no task can be
        # handed to the pool between this check and the loop's exit.
        _process.runner = _process.runner or conductor_sdk.find_runner(sys._getframe(1))
        if _process.runner is None:
            return
        conductor_sdk.end_update_chains(_process.runner)
        if not conductor_sdk.tasks_running(_process.runner):
            _process.runner.stop()  # the SDK's own graceful stop: the loop ends after this pass


def make_worker(
    name: str = TASK_NAME,
    *,
    threads: int = DEFAULT_THREADS,
    domain: str | None = None,
    poll_interval_ms: float = DEFAULT_POLL_INTERVAL_MS,
    worker_id: str | None = None,
    register: bool = False,
    owner_email: str = DEFAULT_OWNER_EMAIL,
) -> QueryWorker:
    """A worker serving task type `name`: the query_sql function, or the write one for execute_sql."""
    return QueryWorker(
        task_definition_name=name,
        execute_function=execute_write_task if name == WRITE_TASK_NAME else execute_query_task,
        poll_interval=poll_interval_ms,
        domain=domain,
        worker_id=worker_id,
        thread_count=threads,
        register_task_def=register,
        task_def_template=task_definition(name, owner_email) if register else None,
        # The SDK heartbeats each running task (an IN_PROGRESS update with extendLease at 80%
        # of the task's responseTimeoutSeconds), so a query that runs longer than that is not
        # timed out and handed to another worker while this one still runs it.
        # CONDUCTOR_WORKER_<NAME>_LEASE_EXTEND_ENABLED=false turns it off.
        lease_extend_enabled=True,
    )


def effective_settings(worker: Worker) -> dict[str, Any]:
    """The worker's settings after the SDK's CONDUCTOR_WORKER_* environment overrides."""
    return resolve_worker_config(
        worker_name=worker.task_definition_name,
        poll_interval=worker.poll_interval,
        domain=worker.domain,
        worker_id=worker.worker_id,
        thread_count=worker.thread_count,
        register_task_def=worker.register_task_def,
        lease_extend_enabled=worker.lease_extend_enabled,
    )


def startup_line(configuration: Configuration, workers: list[Worker], dialects: list[str]) -> str:
    """One line naming the server (no credentials), task names, threads and installed dialects."""
    tasks = []
    processes: dict[str, int] = {}
    for worker in workers:
        processes[worker.task_definition_name] = processes.get(worker.task_definition_name, 0) + 1
    for worker in workers:
        count = processes.pop(worker.task_definition_name, None)
        if count is None:  # a second process of a task name already listed
            continue
        config = effective_settings(worker)
        extra = f", domain {config['domain']}" if config.get("domain") else ""
        shape = f"{config['thread_count']} threads" if count == 1 else f"{count} processes x {config['thread_count']} threads"
        tasks.append(f"{worker.task_definition_name} ({shape}{extra})")
    auth = "key " + configuration.authentication_settings.key_id if configuration.authentication_settings else "none"
    return (
        f"sqladapter worker: server {redact(configuration.host)} (auth: {auth}); "
        f"tasks {', '.join(tasks)}; dialects {', '.join(dialects) or 'none'}"
    )


def serve(
    workers: list[QueryWorker],
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    announce: Callable[[str], None] = print,
    configuration: Configuration | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",
    log_format: str = "text",
    runtime: Runtime | None = None,
) -> int:
    """Run the workers under a TaskHandler until SIGTERM or SIGINT, then drain and return 0.

    metrics_port: serve /metrics, /health and /ready there (0: any free port, announced).
    log_format: "json" makes every worker process log one JSON object per line.
    runtime: whose dialects the startup line names (each worker process makes its own Runtime).
    """
    dialects = sorted((runtime or default()).registry.by_name)

    configuration = configuration or Configuration()
    monitor = metrics.Monitor() if metrics_port is not None else None
    for worker in workers:
        # Read in each worker process when it starts (QueryWorker.__setstate__).
        worker.observability = {"metrics": monitor is not None, "log_format": log_format}
    if tracing.requested() and tracing.missing():
        announce(
            f"sqladapter worker: warning: OTEL_EXPORTER_OTLP_ENDPOINT is set but no spans will be exported: {tracing.missing()}"
        )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        handler = TaskHandler(
            workers=workers,
            configuration=configuration,
            scan_for_annotated_workers=False,
            metrics_settings=monitor.metrics_settings() if monitor is not None else None,
            event_listeners=[metrics.PollListener()] if monitor is not None else None,
        )
    except BaseException:
        if monitor is not None:
            monitor.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
        raise
    try:
        if monitor is not None:
            monitor.watch(
                handler.get_worker_process_status,
                {w.task_definition_name: float(effective_settings(w)["poll_interval"]) / 1000 for w in workers},
            )
            # Listening before the workers start: a port already taken stops the worker at once.
            host, port = monitor.serve(metrics_host, metrics_port)  # type: ignore[arg-type]
        handler.start_processes()
        announce(startup_line(configuration, workers, dialects))
        if monitor is not None:
            announce(f"sqladapter worker: metrics on http://{host}:{port}/metrics, health on /health and /ready")
        if not configuration.host.rstrip("/").endswith("/api"):
            # The SDK appends /tasks/... to the URL as given; without /api every poll is a 404.
            announce(
                "sqladapter worker: warning: CONDUCTOR_SERVER_URL usually ends in /api "
                "(Conductor OSS, Orkes) or /workflow-server/api (Oracle MicroTx Workflows)"
            )
        while not stop.wait(0.5):
            if monitor is not None:
                monitor.reap()
        if monitor is not None:
            monitor.stopping = True
        announce(f"sqladapter worker: stopping; running tasks get up to {grace_seconds:g}s to finish")
        _drain(handler, grace_seconds)
    finally:
        handler.stop_processes()
        if monitor is not None:
            monitor.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    announce("sqladapter worker: stopped")
    return 0


def _drain(handler: TaskHandler, grace_seconds: float) -> None:
    # The SDK's monitor restarts worker processes that exit; these are meant to.
    conductor_sdk.stop_restarting(handler)
    processes = conductor_sdk.worker_processes(handler)
    for process in processes:
        process.terminate()  # SIGTERM: the worker process stops polling and finishes its tasks
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            log.warning(
                "worker process %s still busy after %gs; killing it (its tasks time out on the server and are retried)",
                process.pid,
                grace_seconds,
            )
            process.kill()
            process.join(1.0)
    log.info("worker processes exited: %s", ", ".join(f"{p.pid}={p.exitcode}" for p in processes))


def register_definitions(
    task_names: list[str],
    workflows: list[dict[str, Any]],
    *,
    owner_email: str = DEFAULT_OWNER_EMAIL,
    configuration: Configuration | None = None,
) -> list[str]:
    """Create or update the task definitions and workflow definitions on the server; return what was done."""
    from conductor.client.http.api_client import ApiClient
    from conductor.client.http.rest import ApiException
    from conductor.client.orkes.orkes_metadata_client import OrkesMetadataClient

    configuration = configuration or Configuration()
    server = redact(configuration.host)
    client = OrkesMetadataClient(configuration)
    done = []
    try:
        # The SDK's serializer reads a deprecated field of its own models and warns about it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for name in task_names:
                task_def = task_definition(name, owner_email)
                try:
                    client.update_task_def(task_def)  # PUT: create or replace, so running it twice is harmless
                except ApiException:
                    client.register_task_def(task_def)  # servers that only create through POST
                done.append(f"task definition {name}")
            for data in workflows:
                model = ApiClient().deserialize_class({"ownerEmail": owner_email, **data}, "WorkflowDef")
                client.update_workflow_def(model, overwrite=True)  # PUT [def]: create or replace
                done.append(f"workflow {model.name} v{model.version}")
    except ApiException as exc:
        reason = redact(str(getattr(exc, "body", None) or getattr(exc, "reason", None) or exc))
        if not exc.status:  # the SDK reports a refused connection as status 0
            raise ConnectionError(f"cannot reach the Conductor server at {server}: {reason}") from None
        raise ConnectionError(f"the Conductor server at {server} refused: HTTP {exc.status}: {reason}") from None
    except OSError as exc:
        raise ConnectionError(f"cannot reach the Conductor server at {server}: {exc}") from None
    return done
