"""Prometheus metrics and health endpoints of `sqladapter worker --metrics-port`.

The SDK runs each task name in its own worker process. Every process writes its samples to
one shared directory (prometheus_client's multiprocess mode: `PROMETHEUS_MULTIPROC_DIR`, set
before the processes start); the main process reads the directory to answer

    /metrics  the SDK's own metrics (MetricsSettings: polls, updates, execution times) and
              the sqladapter_* metrics below, in Prometheus text format
    /health   200 while every worker process is alive and its poll loop runs; 503 once the
              worker is stopping, or while a process is dead or its loop is silent
    /ready    200 once every worker process has polled the server successfully and its last
              poll did not fail; 503 before that, while the server cannot be polled, and
              once stopping

Labels hold task names, dialect names, statuses, error types and process ids only: never a
query, a parameter, a connection name or a URL, so a workflow cannot create series at will.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable, Mapping

import orjson

if TYPE_CHECKING:
    from .runtime import Runtime

#: Environment variable of the metrics port, the same as --metrics-port.
PORT_VARIABLE = "SQLADAPTER_METRICS_PORT"

STATUSES = ("completed", "failed", "failed_terminal")
# From a point lookup (about a millisecond) to the longest time limit an operator may allow.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: A poll loop with nothing running and no heartbeat for this long is reported as silent.
SILENT_AFTER_SECONDS = 30.0
# The poll loop's heartbeat is written at most this often: it runs before every poll.
_HEARTBEAT_EVERY = 1.0

UNKNOWN_DIALECT = "unknown"


# -- in each worker process ------------------------------------------------------------------


class WorkerMetrics:
    """The sqladapter_* metrics one worker process writes to the shared directory."""

    def __init__(self) -> None:
        # Imported here: prometheus_client decides at import whether it writes to the shared
        # directory, so the environment variable must be set first (it is, before the spawn).
        from prometheus_client import Counter, Gauge, Histogram

        self.tasks = Counter(
            "sqladapter_tasks",
            "Tasks finished, by outcome: completed, failed (retryable), failed_terminal",
            ["task_name", "dialect", "status"],
        )
        self.duration = Histogram(
            "sqladapter_task_duration_seconds",
            "Time from receiving a task to its result, in the worker",
            ["task_name", "dialect"],
            buckets=DURATION_BUCKETS,
        )
        self.rows = Counter("sqladapter_rows_returned", "Rows returned by completed tasks", ["task_name", "dialect"])
        self.output_bytes = Counter("sqladapter_output_bytes", "JSON bytes of completed tasks' outputs", ["task_name", "dialect"])
        self.truncations = Counter(
            "sqladapter_truncations",
            "Completed tasks whose rows were cut by max_rows or the output budget",
            ["task_name", "dialect"],
        )
        self.errors = Counter(
            "sqladapter_errors", "Failed tasks by error type (the output's error.type)", ["task_name", "dialect", "type"]
        )
        self.update_failures = Counter(
            "sqladapter_task_update_failures",
            "Results the SDK could not deliver to the server after all its retries (the task times out there)",
            ["task_name"],
        )
        # Per process (pid label): the main process reads them to answer /health and /ready.
        self.connections = Gauge(
            "sqladapter_open_connections",
            "Database connections held open, checked out or idle",
            ["dialect"],
            multiprocess_mode="livesum",
        )
        self.in_progress = Gauge("sqladapter_tasks_in_progress", "Tasks running now", ["task_name"], multiprocess_mode="liveall")
        self.threads = Gauge(
            "sqladapter_worker_threads",
            "Tasks a worker process runs at once (thread_count)",
            ["task_name"],
            multiprocess_mode="liveall",
        )
        self.loop = Gauge(
            "sqladapter_worker_loop_timestamp_seconds",
            "When the process's poll loop last ran (Unix time); it runs at least once per poll interval "
            "unless every thread is busy",
            ["task_name"],
            multiprocess_mode="liveall",
        )
        self.poll_ok = Gauge(
            "sqladapter_worker_last_poll_success_timestamp_seconds",
            "When a poll last reached the server (Unix time)",
            ["task_name"],
            multiprocess_mode="liveall",
        )
        self.poll_failed = Gauge(
            "sqladapter_worker_last_poll_failure_timestamp_seconds",
            "When a poll last failed (Unix time)",
            ["task_name"],
            multiprocess_mode="liveall",
        )
        self._dialects_seen: set[str] = set()
        self._last_heartbeat = 0.0
        self._lock = threading.Lock()

    def process_started(self, task_name: str, threads: int) -> None:
        self.threads.labels(task_name).set(threads)
        self.in_progress.labels(task_name).set(0)

    def loop_ran(self, task_name: str) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= _HEARTBEAT_EVERY:
            self._last_heartbeat = now
            self.loop.labels(task_name).set(time.time())

    def task_started(self, task_name: str) -> None:
        self.in_progress.labels(task_name).inc()

    def task_finished(
        self,
        task_name: str,
        dialect: str,
        status: str,
        seconds: float,
        output: Mapping[str, Any] | None,
        error_type: str | None,
    ) -> None:
        self.in_progress.labels(task_name).dec()
        self.tasks.labels(task_name, dialect, status).inc()
        self.duration.labels(task_name, dialect).observe(seconds)
        if status == "completed" and output is not None:
            self.rows.labels(task_name, dialect).inc(output.get("rowCount") or 0)
            self.output_bytes.labels(task_name, dialect).inc(_json_size(output))
            if output.get("truncated"):
                self.truncations.labels(task_name, dialect).inc()
        if error_type is not None:
            self.errors.labels(task_name, dialect, error_type).inc()

    def record_connections(self, counts: Mapping[str, int]) -> None:
        """The connections a Runtime holds open, by dialect (Pools.open_connections)."""
        with self._lock:
            self._dialects_seen.update(counts)
            # A dialect whose last connection closed reads 0, not its last count.
            for dialect in self._dialects_seen:
                self.connections.labels(dialect).set(counts.get(dialect, 0))


def _json_size(output: Mapping[str, Any]) -> int:
    try:
        return len(orjson.dumps(output))
    except TypeError:  # a value outside orjson's types: count it as the SDK will send it
        return len(json.dumps(output, ensure_ascii=False, separators=(",", ":"), default=str).encode())


_worker_metrics: WorkerMetrics | None = None


def worker_metrics() -> WorkerMetrics:
    """This process's metrics, made on first use."""
    global _worker_metrics
    if _worker_metrics is None:
        _worker_metrics = WorkerMetrics()
    return _worker_metrics


class PollListener:
    """An SDK event listener (TaskHandler's event_listeners): poll outcomes and lost results.

    The SDK pickles it into every worker process and calls it from the poll loop there.
    """

    def on_poll_completed(self, event: Any) -> None:
        worker_metrics().poll_ok.labels(event.task_type).set(time.time())

    def on_poll_failure(self, event: Any) -> None:
        worker_metrics().poll_failed.labels(event.task_type).set(time.time())

    def on_task_update_failure(self, event: Any) -> None:
        worker_metrics().update_failures.labels(event.task_type).inc()


def dialect_of(runtime: Runtime, task_input: Mapping[str, Any]) -> str:
    """The dialect a task input names, for labelling a failed task; "unknown" when it names none.

    Reads only the connection string's scheme or extension (or the named connection's): it
    never opens an engine for an input the query refused.
    """
    try:
        text = task_input.get("connection_string")
        name = task_input.get("connection")
        if text is None and isinstance(name, str):
            text = runtime.pools.named_connection(name)
        if not isinstance(text, str) or not text.strip():
            return UNKNOWN_DIALECT
        registry = runtime.registry
        scheme, sep, _ = text.partition("://")
        if sep and scheme.replace("+", "").replace(".", "").replace("-", "").isalnum():
            return registry.for_backend(scheme).name
        return registry.for_extension(text).name
    except Exception:
        return UNKNOWN_DIALECT


# -- in the main process ----------------------------------------------------------------------


class Monitor:
    """The shared metrics directory, and the HTTP server answering /metrics, /health, /ready."""

    def __init__(self) -> None:
        # A directory of our own, removed at the end: the SDK empties it before the worker
        # processes start, which must never touch files another program keeps.
        self.directory = tempfile.mkdtemp(prefix="sqladapter-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.directory
        self.stopping = False
        self._processes: Callable[[], list[dict[str, Any]]] = list
        self._silent_after: dict[str, float] = {}
        self._dead: set[int] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self.address: tuple[str, int] | None = None

    def metrics_settings(self) -> Any:
        """The SDK's MetricsSettings, writing its poll, update and execution metrics to the directory."""
        from conductor.client.configuration.settings.metrics_settings import MetricsSettings

        # The SDK's own metrics process writes a text file nobody reads here (this server
        # answers /metrics): once a minute is enough to keep it from taking CPU from the workers.
        return MetricsSettings(directory=self.directory, update_interval=60.0, clean_directory=True)

    def watch(self, processes: Callable[[], list[dict[str, Any]]], poll_intervals: Mapping[str, float]) -> None:
        """Judge health by `processes()` (the SDK's worker process status) and each worker's poll interval (s)."""
        self._processes = processes
        self._silent_after = {name: max(SILENT_AFTER_SECONDS, 3 * seconds) for name, seconds in poll_intervals.items()}

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (0: any free port) in a daemon thread; return the address bound."""
        handler = type("Handler", (_Handler,), {"monitor": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(f"cannot listen for metrics on {host}:{port}: {exc.strerror or exc}") from None
        self._httpd.daemon_threads = True
        self.address = (host, self._httpd.server_address[1])
        threading.Thread(target=self._httpd.serve_forever, name="sqladapter-metrics", daemon=True).start()
        return self.address

    def reap(self) -> None:
        """Forget the per-process gauges of worker processes that died (the SDK starts new ones)."""
        from prometheus_client import multiprocess

        for status in self._processes():
            pid = status.get("pid")
            if pid is not None and not status.get("alive") and pid not in self._dead:
                self._dead.add(pid)
                multiprocess.mark_process_dead(pid, self.directory)

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- answers ---------------------------------------------------------------------------

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry)

    def _per_process(self) -> dict[str, dict[str, float]]:
        """{metric name: {pid: value}} of the per-process gauges."""
        from prometheus_client.multiprocess import MultiProcessCollector

        wanted = {
            "sqladapter_worker_loop_timestamp_seconds",
            "sqladapter_worker_last_poll_success_timestamp_seconds",
            "sqladapter_worker_last_poll_failure_timestamp_seconds",
            "sqladapter_tasks_in_progress",
        }
        found: dict[str, dict[str, float]] = {name: {} for name in wanted}
        for family in MultiProcessCollector(None, path=self.directory).collect():
            if family.name in wanted:
                for sample in family.samples:
                    pid = sample.labels.get("pid")
                    if pid is not None:
                        found[family.name][pid] = max(sample.value, found[family.name].get(pid, sample.value))
        return found

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of /health: liveness of every worker process and its poll loop."""
        return self._judge(ready=False)

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of /ready: every worker process polls the server successfully."""
        return self._judge(ready=True)

    def _judge(self, *, ready: bool) -> tuple[int, dict[str, Any]]:
        if self.stopping:
            return 503, {"status": "stopping", "problems": ["the worker is stopping: it takes no new tasks"]}
        now = time.time()
        gauges = self._per_process()
        workers, problems = [], []
        for status in self._processes():
            name, pid = status.get("worker"), status.get("pid")
            key = str(pid)
            loop = gauges["sqladapter_worker_loop_timestamp_seconds"].get(key)
            ok = gauges["sqladapter_worker_last_poll_success_timestamp_seconds"].get(key)
            failed = gauges["sqladapter_worker_last_poll_failure_timestamp_seconds"].get(key)
            running = gauges["sqladapter_tasks_in_progress"].get(key, 0.0)
            entry = {
                "task_name": name,
                "pid": pid,
                "alive": bool(status.get("alive")),
                "restarts": status.get("restart_count", 0),
                "tasks_in_progress": int(running),
                "loop_age_seconds": None if loop is None else round(now - loop, 3),
                "last_poll_success_age_seconds": None if ok is None else round(now - ok, 3),
                "last_poll_failure_age_seconds": None if failed is None else round(now - failed, 3),
            }
            workers.append(entry)
            if not entry["alive"]:
                problems.append(f"{name}: worker process {pid} is not running (exit code {status.get('exitcode')})")
            elif loop is None:
                problems.append(f"{name}: worker process {pid} has not started polling yet")
            elif running <= 0 and now - loop > self._silent_after.get(name, SILENT_AFTER_SECONDS):  # type: ignore[arg-type]
                problems.append(f"{name}: worker process {pid}'s poll loop has not run for {now - loop:.0f}s")
            elif ready and ok is None:
                problems.append(f"{name}: worker process {pid} has not polled the server successfully yet")
            elif ready and failed is not None and failed > ok:  # type: ignore[operator]
                problems.append(f"{name}: worker process {pid}'s last poll failed; see the worker log for why")
        if not workers:
            problems.append("no worker processes")
        body = {"status": "ok" if not problems else ("not ready" if ready else "unhealthy"), "workers": workers}
        if problems:
            body["problems"] = problems  # type: ignore[assignment]
        return (200 if not problems else 503), body


class _Handler(BaseHTTPRequestHandler):
    monitor: Monitor
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds are not news
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST

                return self._send(200, self.monitor.exposition(), CONTENT_TYPE_LATEST)
            if path in ("/health", "/healthz"):
                return self._json(*self.monitor.health())
            if path in ("/ready", "/readyz"):
                return self._json(*self.monitor.readiness())
        except Exception as exc:  # an answer, not a dropped connection, whatever went wrong
            return self._send(500, f"error: {type(exc).__name__}\n".encode(), "text/plain; charset=utf-8")
        self._send(404, b"not found: try /metrics, /health or /ready\n", "text/plain; charset=utf-8")

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode() + b"\n", "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
