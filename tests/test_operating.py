"""Running the worker in production, end to end through the real SDK TaskHandler: Prometheus
metrics and the health endpoints (--metrics-port), lease extension under a server that times
tasks out, JSON logs that hold no password or parameter (--log-format json), and one
OpenTelemetry span per task."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import servers
from conductor_server import ConductorServer
from servers import postgresql_admin
from worker_process import WorkerProcess, descendants

from sqladapter import errors
from sqladapter.metrics import STATUSES
from sqladapter.runtime import default

PASSWORD = "Op3r@t1ng:p/w%d#" + "x9"
QUOTED = urllib.parse.quote(PASSWORD, safe="")
SENTINEL = "param-sentinel-7731"
# A query that never ends by itself: its time limit ends it, so it runs for timeout_ms.
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000000) SELECT count(*) AS n FROM c"
ERROR_TYPES = {
    cls.type for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.SqlAdapterError)
} | {"internal"}


def seed_with_cli(data_dir: Path) -> None:
    env = {"SQLADAPTER_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "sqladapter", "seed"], env=env, cwd=data_dir, check=True, capture_output=True)


def worker_env(server: ConductorServer, data_dir: Path, **extra: str) -> dict[str, str]:
    return {"CONDUCTOR_SERVER_URL": server.url, "SQLADAPTER_DATA_DIR": str(data_dir), **extra}


def metrics_port(worker: WorkerProcess, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"metrics on http://[^/\s]+:(\d+)/metrics", worker.log())
        if match:
            return int(match.group(1))
        if worker.process is not None and worker.process.poll() is not None:
            raise AssertionError(f"the worker exited with {worker.process.returncode}:\n{worker.log()}")
        time.sleep(0.05)
    raise AssertionError(f"no metrics line within {timeout}s:\n{worker.log()}")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_status(port: int, path: str, status: int, timeout: float = 60) -> dict[str, Any]:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = get(port, path)
        if last[0] == status:
            return json.loads(last[1])
        time.sleep(0.05)
    raise AssertionError(f"{path} did not answer {status} within {timeout}s; last answer: {last}")


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted label items: value}} parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = get(port, "/metrics")
    assert status == 200, text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for key, v in samples.get(name, {}).items() if all((k, labels[k]) in key for k in labels))


def has_postgresql_plugin() -> bool:
    return "postgresql" in default().registry.by_name


# -- metrics and health -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConductorServer, WorkerProcess, int]]:
    data_dir = tmp_path_factory.mktemp("metered")
    seed_with_cli(data_dir)
    server = ConductorServer("/api").start()
    env = worker_env(server, data_dir, SQLADAPTER_CONNECTION_DOWN=f"postgresql://app:{QUOTED}@127.0.0.1:9/app")
    worker = WorkerProcess(["--metrics-port", "0", "--threads", "2", "--poll-interval", "20", "--grace-period", "30"],
                           env, data_dir / "worker.log").start()
    worker.wait_started()
    port = metrics_port(worker)
    yield server, worker, port
    worker.stop()
    server.stop()


def test_metrics_count_the_tasks_that_ran(metered):
    server, worker, port = metered
    people = {"connection_string": "fake_people.db"}
    tasks: list[tuple[dict[str, Any], str]] = [
        ({**people, "query": "SELECT * FROM people"}, "sqlite"),
        ({**people, "query": "SELECT * FROM people WHERE zip_code = :z", "parameters": {"z": SENTINEL}}, "sqlite"),
        ({**people, "query": "SELECT name FROM people ORDER BY name"}, "sqlite"),
        ({**people, "query": "SELECT name FROM people", "max_rows": 2}, "sqlite"),  # truncated
        ({**people, "query": "DELETE FROM people"}, "sqlite"),  # not_read_only
        ({**people, "query": "SELECT * FROM no_such_table"}, "sqlite"),  # query_error
        ({**people, "query": "SELECT :a AS a", "parameters": {"b": SENTINEL}}, "sqlite"),  # bad_input
        ({**people, "query": ENDLESS, "timeout_ms": 200}, "sqlite"),  # timeout, retryable
        ({"connection_string": "nowhere.db", "query": "SELECT 1"}, "sqlite"),  # connection_config
    ]
    if has_postgresql_plugin():
        tasks.append(({"connection": "down", "query": "SELECT 1"}, "postgresql"))  # database_unavailable
    ids = server.add_tasks("query_sql", [t for t, _ in tasks])
    assert server.wait_for(lambda s: all(s.updates_for(i) for i in ids), 60), worker.log()
    bodies = [server.updates_for(i)[-1].body for i in ids]

    status_of = {"COMPLETED": "completed", "FAILED": "failed", "FAILED_WITH_TERMINAL_ERROR": "failed_terminal"}
    expected = collections.Counter((dialect, status_of[b["status"]]) for (_, dialect), b in zip(tasks, bodies))
    assert {s for _, s in expected} == set(STATUSES), expected  # the run has every outcome
    completed = [b["outputData"] for b in bodies if b["status"] == "COMPLETED"]
    errors_seen = collections.Counter(
        (dialect, b["outputData"]["error"]["type"]) for (_, dialect), b in zip(tasks, bodies) if b["status"] != "COMPLETED"
    )
    # The worker writes the metrics before it sends the result; a scrape then sees them all.
    samples = scrape(port)
    for (dialect, status), count in expected.items():
        assert total(samples, "sqladapter_tasks_total", task_name="query_sql", dialect=dialect, status=status) == count
    assert total(samples, "sqladapter_tasks_total") == len(tasks)
    assert total(samples, "sqladapter_task_duration_seconds_count", task_name="query_sql") == len(tasks)
    assert total(samples, "sqladapter_task_duration_seconds_bucket", le="+Inf") == len(tasks)
    assert total(samples, "sqladapter_rows_returned_total", dialect="sqlite") == sum(o["rowCount"] for o in completed)
    assert total(samples, "sqladapter_truncations_total") == sum(bool(o["truncated"]) for o in completed) == 1
    assert total(samples, "sqladapter_output_bytes_total") == sum(len(orjson.dumps(o)) for o in completed)
    for (dialect, kind), count in errors_seen.items():
        assert total(samples, "sqladapter_errors_total", dialect=dialect, type=kind) == count, (dialect, kind)
    assert total(samples, "sqladapter_errors_total") == sum(errors_seen.values())
    assert total(samples, "sqladapter_open_connections", dialect="sqlite") >= 1
    assert total(samples, "sqladapter_worker_threads", task_name="query_sql") == 2
    # The SDK's own metrics, through its MetricsSettings, in the same scrape.
    assert total(samples, "task_poll_total", taskType="query_sql") > 0
    assert total(samples, "task_execute_time_seconds_count", taskType="query_sql") == len(tasks)

    # Labels name task names, dialects, statuses, error types and processes: nothing from a task.
    known = {
        "task_name": {"query_sql"},
        "dialect": set(default().registry.by_name) | {"unknown"},
        "status": set(STATUSES),
        "type": ERROR_TYPES,
    }
    for name, series in samples.items():
        for key in series:
            labels = dict(key)
            if name.startswith("sqladapter_"):
                for label, value in labels.items():
                    if label == "pid":
                        assert value.isdigit()
                    elif label != "le":
                        assert value in known[label], (name, label, value)
            for value in labels.values():
                assert "SELECT" not in value and "://" not in value and SENTINEL not in value, (name, labels)
                assert PASSWORD not in value and QUOTED not in value and "people" not in value, (name, labels)


def test_health_fails_while_a_worker_process_is_dead_and_recovers_when_the_sdk_restarts_it(metered):
    server, worker, port = metered
    health = wait_for_status(port, "/health", 200)
    ready = wait_for_status(port, "/ready", 200)
    (entry,) = health["workers"]
    assert entry["task_name"] == "query_sql" and entry["alive"] is True and ready["status"] == "ok"
    victim = entry["pid"]
    assert victim in descendants(worker.process.pid)

    os.kill(victim, signal.SIGKILL)
    down = wait_for_status(port, "/health", 503, timeout=10)
    assert any(str(victim) in problem for problem in down["problems"]), down
    assert get(port, "/ready")[0] == 503

    # The SDK's monitor starts a new process; health is back once it polls.
    back = wait_for_status(port, "/health", 200, timeout=60)
    (entry,) = back["workers"]
    assert entry["pid"] != victim and entry["restarts"] == 1
    # The new process serves tasks, and the dead one's per-process gauges are gone.
    task_id = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": "SELECT 1 AS one"})
    assert server.wait_for(lambda s: bool(s.updates_for(task_id)), 60), worker.log()
    pids = {dict(key).get("pid") for key in scrape(port)["sqladapter_worker_threads"]}
    assert pids == {str(entry["pid"])}


def test_health_and_ready_answer_503_once_stopping_while_running_tasks_finish(metered):
    server, worker, port = metered
    wait_for_status(port, "/health", 200)
    task_id = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": ENDLESS, "timeout_ms": 4000})
    assert server.wait_for(lambda s: task_id in s.handed_out, 30)
    worker.process.send_signal(signal.SIGTERM)
    stopping = wait_for_status(port, "/health", 503, timeout=10)
    assert stopping["status"] == "stopping"
    assert json.loads(get(port, "/ready")[1])["status"] == "stopping"
    assert worker.stop() == 0, worker.log()
    # The task running at SIGTERM still reported (its time limit ended it).
    assert server.updates_for(task_id)[-1].body["outputData"]["error"]["type"] == "timeout"


def test_ready_fails_while_the_server_cannot_be_polled_and_health_does_not(tmp_path):
    """Liveness is the worker's own; readiness follows the Conductor server."""
    seed_with_cli(tmp_path)
    env = {"CONDUCTOR_SERVER_URL": "http://127.0.0.1:9/api", "SQLADAPTER_DATA_DIR": str(tmp_path)}
    with WorkerProcess(["--metrics-port", "0", "--poll-interval", "20"], env, tmp_path / "w.log") as worker:
        worker.wait_started()
        port = metrics_port(worker)
        deadline = time.monotonic() + 30
        while json.loads(get(port, "/ready")[1])["workers"][0]["last_poll_failure_age_seconds"] is None:
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.05)
        # Polls fail (nothing listens there), and the process and its loop are fine.
        assert get(port, "/health")[0] == 200
        status, body = get(port, "/ready")
        assert status == 503 and "not polled the server successfully" in json.loads(body)["problems"][0]
        assert worker.stop() == 0


def test_a_metrics_port_in_use_stops_the_worker_with_a_message(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"CONDUCTOR_SERVER_URL": "http://127.0.0.1:9/api", "SQLADAPTER_DATA_DIR": str(tmp_path),
               "SQLADAPTER_METRICS_PORT": str(port), "SQLADAPTER_METRICS_HOST": "127.0.0.1"}
        worker = WorkerProcess([], env, tmp_path / "w.log").start()
        assert worker.process.wait(60) == 1
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in worker.log()
    assert "choose another --metrics-port" in worker.log()


# -- lease extension ----------------------------------------------------------------------------

RESPONSE_TIMEOUT = 8  # the SDK heartbeats at 80% of it, checking once a second


def test_a_query_outlasting_the_response_timeout_keeps_its_lease_and_is_not_rescheduled(tmp_path):
    """Side by side: query_sql (lease extension on, the default) and the same query under a task
    name whose lease extension is turned off through the SDK's variable, as a control."""
    seed_with_cli(tmp_path)
    with ConductorServer("/api", response_timeout_seconds=RESPONSE_TIMEOUT, enforce_response_timeout=True) as server:
        long_query = {"connection_string": "fake_people.db", "query": ENDLESS, "timeout_ms": 18_000}
        kept = server.add_task("query_sql", long_query)
        control = server.add_task("no_lease", long_query)
        env = worker_env(server, tmp_path, CONDUCTOR_WORKER_NO_LEASE_LEASE_EXTEND_ENABLED="false")
        args = ["--task-name", "no_lease", "--threads", "2", "--poll-interval", "20", "--grace-period", "1"]
        with WorkerProcess(args, env, tmp_path / "w.log") as worker:
            worker.wait_started()
            assert server.wait_for(lambda s: bool(s.updates_for(kept)) and bool(s.updates_for(control)), 60), worker.log()
            assert worker.stop() == 0, worker.log()
        extensions = [u for u in server.lease_extensions if u.task_id == kept]
        # Ran 18 s under an 8 s response timeout: kept by heartbeats, never handed out again.
        assert len(extensions) >= 2 and all(u.status == "IN_PROGRESS" for u in extensions)
        assert kept not in server.timed_out and kept not in server.retries
        assert server.handed_out.count(kept) == 1
        body = server.updates_for(kept)[-1].body
        assert body["outputData"]["error"]["type"] == "timeout", body  # the worker's own answer, at 18 s
        # Without the heartbeats the server times the task out and hands a retry to a worker
        # while the first run is still going.
        assert control in server.timed_out and server.retries[control] in server.handed_out
        assert not [u for u in server.lease_extensions if u.task_id == control]


# -- JSON logs ----------------------------------------------------------------------------------


def wait_for_json_startup(worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if '"sqladapter worker: server ' in worker.log():
            return
        if worker.process is not None and worker.process.poll() is not None:
            raise AssertionError(f"the worker exited with {worker.process.returncode}:\n{worker.log()}")
        time.sleep(0.05)
    raise AssertionError(f"no startup line within {timeout}s:\n{worker.log()}")


@pytest.mark.servers
def test_json_logs_hold_one_line_per_task_and_never_a_password_or_a_parameter(tmp_path):
    postgresql_admin().close()  # skips (or fails in CI) without the server
    seed_with_cli(tmp_path)
    good = f"postgresql://postgres:{QUOTED}@{servers.POSTGRESQL_HOST}/postgres"
    down = f"postgresql://postgres:{QUOTED}@127.0.0.1:9/postgres"
    pg, people = {"connection": "pg"}, {"connection_string": "fake_people.db"}
    tasks = [
        {**pg, "query": "SELECT :v AS v", "parameters": {"v": SENTINEL}},
        {**pg, "query": "SELEC 1"},
        {**pg, "query": "SELECT * FROM no_such_table WHERE x = :v", "parameters": {"v": SENTINEL}},
        {**pg, "query": "DELETE FROM pg_class"},
        # PostgreSQL quotes the value in its error message: the task's reason holds it, the log must not.
        {**pg, "query": "SELECT CAST(:v AS integer) AS n", "parameters": {"v": SENTINEL}},
        {**pg, "query": "SELECT pg_sleep(5) AS s", "timeout_ms": 300},
        {**pg, "query": "SELECT :a AS a", "parameters": {"b": SENTINEL}},
        {"connection": "pgdown", "query": "SELECT :v AS v", "parameters": {"v": SENTINEL}},
        {**people, "query": "SELECT * FROM people WHERE zip_code = :z", "parameters": {"z": SENTINEL}},
        {**people, "query": "SELECT CAST(:v AS integer) + no_such_column", "parameters": {"v": SENTINEL}},
    ]
    with ConductorServer("/api") as server:
        env = worker_env(server, tmp_path, SQLADAPTER_CONNECTION_PG=good, SQLADAPTER_CONNECTION_PGDOWN=down,
                         CONDUCTOR_LOG_LEVEL="INFO")
        worker = WorkerProcess(["--log-format", "json", "--threads", "2", "--poll-interval", "20"], env,
                               tmp_path / "w.log").start()
        try:
            wait_for_json_startup(worker)
            ids = server.add_tasks("query_sql", tasks)
            assert server.wait_for(lambda s: all(s.updates_for(i) for i in ids), 60), worker.log()[-3000:]
            assert worker.stop() == 0, worker.log()[-3000:]
        finally:
            if worker.process.poll() is None:
                worker.stop()
        bodies = {i: server.updates_for(i)[-1].body for i in ids}

    lines = worker.log().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(r, dict) and {"time", "level", "logger", "message"} <= set(r) for r in records)
    per_task = {r["task_id"]: r for r in records if r["logger"] == "sqladapter.task"}
    assert set(per_task) == set(ids)
    for task_id, body in bodies.items():
        record = per_task[task_id]
        assert record["workflow_id"] == body["workflowInstanceId"] and record["task_name"] == "query_sql"
        assert record["status"] == body["status"] and record["elapsed_ms"] >= 0
        error = body["outputData"].get("error")
        assert record["error_type"] == (error["type"] if error else None)
        assert record["dialect"] == ("sqlite" if task_id == ids[-1] or task_id == ids[-2] else "postgresql")
    statuses = {r["status"] for r in per_task.values()}
    assert statuses == {"COMPLETED", "FAILED", "FAILED_WITH_TERMINAL_ERROR"}, statuses
    # The sentinel reached the database and came back in a task's reason: its absence below means something.
    assert SENTINEL in bodies[ids[4]]["reasonForIncompletion"]

    text = worker.log()
    for needle in (PASSWORD, QUOTED, good, down, SENTINEL):
        assert needle not in text, f"{needle!r} is in the JSON log"


# -- OpenTelemetry ------------------------------------------------------------------------------


def test_statement_operation_names():
    from sqladapter.tracing import operation

    assert operation("SELECT 1") == "SELECT"
    assert operation("  -- a comment\n /* another */ select * from t") == "SELECT"
    assert operation("WITH x AS (SELECT 1) SELECT * FROM x") == "SELECT"
    assert operation("pragma table_info(t)") == "PRAGMA"
    assert operation("DROP TABLE t") is None and operation("") is None and operation(None) is None


@pytest.fixture
def in_memory_spans(monkeypatch):
    pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra: pip install 'sqladapter[otel]'")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sqladapter import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield lambda statements=False: (
        monkeypatch.setenv(tracing.STATEMENTS_VARIABLE, "1" if statements else "0"),
        tracing.enable(provider),
        exporter,
    )[-1]
    tracing.disable()


def _run_through_the_sdk(server: ConductorServer, task_inputs: list[dict[str, Any]]) -> list[str]:
    """The SDK's TaskRunner in a thread of this process, serving query_sql until the tasks reported."""
    from conductor.client.automator.task_runner import TaskRunner
    from conductor.client.configuration.configuration import Configuration

    from sqladapter.engines import conductor

    runner = TaskRunner(conductor.make_worker(threads=2, poll_interval_ms=20), Configuration(server_api_url=server.url))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        ids = server.add_tasks("query_sql", task_inputs)
        assert server.wait_for(lambda s: all(s.updates_for(i) for i in ids), 60)
    finally:
        runner.stop()
        thread.join(10)
    return ids


def test_one_span_per_task_with_db_attributes_and_no_statement_unless_asked(in_memory_spans, people_db, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_HTTP2_ENABLED", "false")
    exporter = in_memory_spans()
    people = {"connection_string": "fake_people.db"}
    with ConductorServer("/api") as server:
        ids = _run_through_the_sdk(server, [
            {**people, "query": "SELECT * FROM people WHERE zip_code = :z OR name = :n",
             "parameters": {"z": "12345", "n": SENTINEL}},
            {**people, "query": "SELECT name FROM people", "max_rows": 2},
            {**people, "query": "DELETE FROM people"},
            {**people, "query": "SELECT * FROM no_such_table"},
        ])
    spans = {span.attributes["conductor.task.id"]: span for span in exporter.get_finished_spans()}
    assert set(spans) == set(ids)  # one span per task
    point, truncated, refused, missing = (spans[i] for i in ids)
    assert point.name == "SELECT sqlite"
    assert point.attributes["db.system"] == "sqlite" and point.attributes["db.operation.name"] == "SELECT"
    assert point.attributes["db.response.returned_rows"] == 1 and point.attributes["sqladapter.outcome"] == "completed"
    assert point.attributes["conductor.workflow.id"] == server._tasks[ids[0]]["workflowInstanceId"]
    assert point.status.is_ok
    assert truncated.attributes["sqladapter.truncated"] is True and truncated.attributes["db.response.returned_rows"] == 2
    assert refused.attributes["sqladapter.outcome"] == "failed_terminal"
    assert refused.attributes["error.type"] == "not_read_only" and not refused.status.is_ok
    assert missing.attributes["error.type"] == "query_error"
    for span in spans.values():
        assert "db.query.text" not in span.attributes
        assert SENTINEL not in json.dumps(dict(span.attributes)) and SENTINEL not in (span.status.description or "")


def test_the_statement_is_recorded_only_with_sqladapter_trace_statements(in_memory_spans, people_db, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_HTTP2_ENABLED", "false")
    exporter = in_memory_spans(statements=True)
    query = "SELECT name FROM people WHERE zip_code = :z"
    with ConductorServer("/api") as server:
        (task_id,) = _run_through_the_sdk(server, [
            {"connection_string": "fake_people.db", "query": query, "parameters": {"z": SENTINEL}},
        ])
    (span,) = exporter.get_finished_spans()
    assert span.attributes["db.query.text"] == query
    assert SENTINEL not in json.dumps(dict(span.attributes))  # the statement, never its parameters


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: decodes each ExportTraceServiceRequest into `spans`."""

    spans: list[dict[str, Any]]
    lock: threading.Condition

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}.get("service.name")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: a.value for a in span.attributes}
                        self.spans.append({"path": self.path, "service": service, "name": span.name,
                                           "attributes": attributes})
            self.lock.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_worker_processes_export_a_span_per_task_to_the_otlp_endpoint(tmp_path):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the otel extra: pip install 'sqladapter[otel]'")
    seed_with_cli(tmp_path)
    lock = threading.Condition()
    handler = type("Collector", (_Collector,), {"spans": [], "lock": lock})
    collector = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        with ConductorServer("/api") as server:
            env = worker_env(server, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_port}",
                             OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="sql-worker-test")
            with WorkerProcess(["--poll-interval", "20"], env, tmp_path / "w.log") as worker:
                worker.wait_started()
                ids = server.add_tasks("query_sql", [
                    {"connection_string": "fake_people.db", "query": "SELECT * FROM people"},
                    {"connection_string": "fake_people.db", "query": "DELETE FROM people"},
                ])
                assert server.wait_for(lambda s: all(s.updates_for(i) for i in ids), 60), worker.log()
                # Stopped at once: spans still in the batch are sent as the process exits.
                assert worker.stop() == 0, worker.log()
        spans = handler.spans
        by_task = {s["attributes"]["conductor.task.id"].string_value: s for s in spans}
        assert sorted(by_task) == sorted(ids) and len(spans) == len(ids), spans
        ok, refused = by_task[ids[0]], by_task[ids[1]]
        assert ok["path"] == "/v1/traces" and ok["service"] == "sql-worker-test" and ok["name"] == "SELECT sqlite"
        assert ok["attributes"]["db.system"].string_value == "sqlite"
        assert ok["attributes"]["db.response.returned_rows"].int_value == 5
        assert refused["attributes"]["error.type"].string_value == "not_read_only"
    finally:
        collector.shutdown()
        collector.server_close()


# -- worker processes -------------------------------------------------------------------------


def test_processes_runs_each_task_name_in_that_many_sdk_worker_processes(tmp_path):
    seed_with_cli(tmp_path)
    with ConductorServer("/api") as server:
        args = ["--processes", "2", "--threads", "2", "--metrics-port", "0", "--poll-interval", "20"]
        with WorkerProcess(args, worker_env(server, tmp_path), tmp_path / "w.log") as worker:
            line = worker.wait_started()
            assert "query_sql (2 processes x 2 threads)" in line
            port = metrics_port(worker)
            health = wait_for_status(port, "/ready", 200)
            pids = {entry["pid"] for entry in health["workers"]}
            assert len(pids) == 2 and pids <= set(descendants(worker.process.pid))
            inputs = [{"connection_string": "fake_people.db", "query": "SELECT :n AS n", "parameters": {"n": n},
                       "fetch": "value"} for n in range(40)]
            ids = server.add_tasks("query_sql", inputs)
            assert server.wait_for_updates(len(ids), 60), worker.log()
            assert total(scrape(port), "sqladapter_worker_threads", task_name="query_sql") == 4
            assert worker.stop() == 0, worker.log()
        assert sorted(u.task_id for u in server.updates) == sorted(ids)  # each exactly once
        finals = server.final_updates()
        assert [finals[i]["outputData"]["value"] for i in ids] == list(range(40))
        assert max(p.count for p in server.polls) == 2  # each process polls for its own free threads
