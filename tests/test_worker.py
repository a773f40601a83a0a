"""The Conductor worker end to end: `sqladapter worker` (the real SDK TaskHandler, spawned worker
processes) against tests/conductor_server.py, checked through the task updates it records."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conductor_server import ConductorServer
from worker_process import WorkerProcess

from sqladapter.errors import UnknownDialectError
from sqladapter.runtime import default

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "workflows" / "tutorial"
FIXTURES = ROOT / "fixtures"
PASSWORD = "s3cret-Pw-42"
OUTPUT_BUDGET = 6000
SLOW_QUERY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) SELECT count(*) AS n FROM c"


def people() -> list[dict[str, str]]:
    with open(FIXTURES / "people.csv", newline="") as f:
        return list(csv.DictReader(f))


def seed_with_cli(data_dir: Path) -> None:
    """fake_people.db made the way the README says: `sqladapter seed`."""
    env = {"SQLADAPTER_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "sqladapter", "seed"], env=env, cwd=data_dir, check=True, capture_output=True)


def worker_env(server: ConductorServer, data_dir: Path, **extra: str) -> dict[str, str]:
    return {"CONDUCTOR_SERVER_URL": server.url, "SQLADAPTER_DATA_DIR": str(data_dir), **extra}


def wait_for_task(server: ConductorServer, task_id: str, timeout: float = 60) -> dict[str, Any]:
    assert server.wait_for(lambda s: any(u.task_id == task_id for u in s.updates), timeout), f"{task_id} never reported"
    return server.updates_for(task_id)[-1].body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConductorServer, WorkerProcess, Path]]:
    """One worker for query_sql and the tutorial's query_sqlite, with a small output budget and a
    named connection to a database that is down (a closed port, with a password in its URL)."""
    data_dir = tmp_path_factory.mktemp("worker-data")
    seed_with_cli(data_dir)
    server = ConductorServer("/api").start()
    env = worker_env(
        server,
        data_dir,
        SQLADAPTER_MAX_OUTPUT_BYTES=str(OUTPUT_BUDGET),
        SQLADAPTER_CONNECTION_DOWN=f"postgresql://postgres:{PASSWORD}@127.0.0.1:9/test",
    )
    worker = WorkerProcess(
        ["--task-name", "query_sqlite", "--threads", "2", "--poll-interval", "20"], env, data_dir / "worker.log"
    ).start()
    worker.wait_started()
    yield server, worker, data_dir
    status = worker.stop()
    server.stop()
    assert status == 0, worker.log()


def test_startup_line_names_server_tasks_threads_and_dialects(served):
    server, worker, _ = served
    line = worker.wait_started()
    assert f"server {server.url} (auth: none)" in line
    assert "query_sql (2 threads)" in line and "query_sqlite (2 threads)" in line
    assert "sqlite" in line.split("dialects", 1)[1]


def test_success_returns_rows_as_json(served):
    server, _, _ = served
    task_id = server.add_task(
        "query_sql",
        {
            "connection_string": "fake_people.db",
            "query": "SELECT name, surname FROM people WHERE zip_code = :zip",
            "parameters": {"zip": "12345"},
        },
    )
    body = wait_for_task(server, task_id)
    assert body["status"] == "COMPLETED"
    assert body["outputData"]["rows"] == [{"name": "John", "surname": "Doe"}]
    assert body["outputData"]["rowCount"] == 1 and body["outputData"]["truncated"] is False
    assert body["workflowInstanceId"] == server._tasks[task_id]["workflowInstanceId"]
    assert server.updates_for(task_id)[0].endpoint == "update-v2"


def test_tutorial_workflow_task_served_under_its_own_name(served):
    """simple_worker_2.json's task, inputs as written, polled as query_sqlite."""
    server, _, _ = served
    workflow = json.loads((TUTORIAL / "simple_worker_2.json").read_text())
    task = workflow["tasks"][0]
    task_id = server.add_task(task["name"], task["inputParameters"])
    body = wait_for_task(server, task_id)
    assert body["status"] == "COMPLETED"
    assert body["outputData"]["rows"] == people()
    assert [p["name"] for p in body["outputData"]["rows"]] == ["John", "Jane", "Bob", "Alice", "Charlie"]


def test_terminal_error_fails_without_retry(served):
    server, _, _ = served
    task_id = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": "DELETE FROM people"})
    body = wait_for_task(server, task_id)
    assert body["status"] == "FAILED_WITH_TERMINAL_ERROR"
    error = body["outputData"]["error"]
    assert error["type"] == "not_read_only" and error["retryable"] is False
    assert body["reasonForIncompletion"] == error["message"]
    assert any("terminal" in entry["log"] for entry in body["logs"])
    assert all(entry["taskId"] == task_id and entry["createdTime"] > 1e12 for entry in body["logs"])  # epoch ms


def test_misspelt_input_field_is_refused_and_engine_keys_are_ignored(served):
    server, _, _ = served
    typo = server.add_task(
        "query_sql", {"connection_string": "fake_people.db", "query": "SELECT 1 AS one", "paramters": {"a": 1}}
    )
    engine_keys = server.add_task(
        "query_sql", {"connection_string": "fake_people.db", "query": "SELECT 1 AS one", "_createdBy": "someone"}
    )
    body = wait_for_task(server, typo)
    assert body["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert body["outputData"]["error"]["type"] == "bad_input" and "paramters" in body["reasonForIncompletion"]
    body = wait_for_task(server, engine_keys)
    assert body["status"] == "COMPLETED" and body["outputData"]["rows"] == [{"one": 1}]


def test_database_down_is_retryable_and_never_shows_the_password(served):
    server, worker, _ = served
    try:
        default().registry.for_backend("postgresql")
    except UnknownDialectError:
        pytest.skip("the postgresql dialect is not installed: pip install -e plugins/sqladapter-postgresql")
    task_id = server.add_task("query_sql", {"connection": "down", "query": "SELECT 1"})
    body = wait_for_task(server, task_id)
    assert body["status"] == "FAILED"
    error = body["outputData"]["error"]
    assert error["type"] == "database_unavailable" and error["retryable"] is True
    assert body["reasonForIncompletion"] == error["message"]
    assert PASSWORD not in json.dumps(body)
    assert PASSWORD not in worker.log()


def test_output_over_the_byte_budget_returns_fewer_rows_marked_truncated(served):
    server, _, _ = served
    query = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) "
        "SELECT x, printf('%090d', x) AS pad FROM c"
    )
    task_id = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": query})
    body = wait_for_task(server, task_id)
    assert body["status"] == "COMPLETED"
    output = body["outputData"]
    assert output["truncated"] is True
    assert 0 < output["rowCount"] == len(output["rows"]) < 500
    assert [row["x"] for row in output["rows"]] == list(range(1, output["rowCount"] + 1))
    assert len(json.dumps(output, separators=(",", ":"))) <= OUTPUT_BUDGET


@pytest.mark.parametrize("base", ["/api", "/workflow-server/api"])
def test_base_paths_and_fallback_when_update_v2_is_missing(base, tmp_path):
    """Conductor OSS/Orkes (/api) and MicroTx (/workflow-server/api); a server without update-v2
    gets every result through POST /tasks instead."""
    seed_with_cli(tmp_path)
    with ConductorServer(base, update_v2=False) as server:
        ids = server.add_tasks(
            "query_sql",
            [{"connection_string": "fake_people.db", "query": "SELECT :n AS n", "parameters": {"n": n}} for n in range(5)],
        )
        # One thread: with several, the SDK's switch to v1 races and a second update sleeps 10 s before retrying.
        args = ["--threads", "1", "--poll-interval", "20"]
        with WorkerProcess(args, worker_env(server, tmp_path), tmp_path / "w.log") as worker:
            assert server.wait_for_updates(len(ids), 60), worker.log()
            assert worker.stop() == 0
        finals = server.final_updates()
        assert {finals[t]["outputData"]["rows"][0]["n"] for t in ids} == set(range(5))
        assert all(finals[t]["status"] == "COMPLETED" for t in ids)
        assert ("POST", f"{base}/tasks/update-v2") in server.requests  # tried once ...
        assert [u.endpoint for u in server.updates].count("v1") == len(ids)  # ... then v1 for every task
        assert all(path.startswith(base + "/") for _, path in server.requests)


def test_auth_key_and_secret_get_a_token_and_stay_out_of_the_log(tmp_path):
    seed_with_cli(tmp_path)
    with ConductorServer("/api", auth=("key-id-1", PASSWORD)) as server:
        task_id = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": "SELECT 2 AS two"})
        env = worker_env(server, tmp_path, CONDUCTOR_AUTH_KEY="key-id-1", CONDUCTOR_AUTH_SECRET=PASSWORD)
        with WorkerProcess(["--poll-interval", "20"], env, tmp_path / "w.log") as worker:
            body = wait_for_task(server, task_id)
            assert worker.stop() == 0
        assert body["status"] == "COMPLETED" and body["outputData"]["rows"] == [{"two": 2}]
        assert {"keyId": "key-id-1", "keySecret": PASSWORD} in server.token_requests
        assert "(auth: key key-id-1)" in worker.log()
        assert PASSWORD not in worker.log()


@pytest.mark.slow
def test_200_tasks_across_8_threads_none_lost_or_duplicated(tmp_path):
    seed_with_cli(tmp_path)
    with ConductorServer("/api") as server:
        inputs = [
            {"connection_string": "fake_people.db", "query": "SELECT :n AS n", "parameters": {"n": n}, "fetch": "value"}
            for n in range(200)
        ]
        ids = server.add_tasks("query_sql", inputs)
        with WorkerProcess(["--threads", "8", "--poll-interval", "20"], worker_env(server, tmp_path), tmp_path / "w.log") as worker:
            assert server.wait_for_updates(200, 120), f"{len(server.updates)} of 200 reported\n{worker.log()}"
            assert worker.stop() == 0
        reported = [u.task_id for u in server.updates]
        assert sorted(reported) == sorted(ids)  # each task exactly once
        finals = server.final_updates()
        assert [finals[t]["outputData"]["value"] for t in ids] == list(range(200))
        assert max(p.count for p in server.polls) == 8  # polls ask for as many tasks as free threads


def test_sigterm_mid_run_finishes_running_tasks_and_takes_no_more(tmp_path):
    """Every task the worker took is reported exactly once, complete; the rest stay queued."""
    seed_with_cli(tmp_path)
    with ConductorServer("/api") as server:
        ids = server.add_tasks("query_sql", [{"connection_string": "fake_people.db", "query": SLOW_QUERY}] * 60)
        worker = WorkerProcess(["--threads", "4", "--poll-interval", "20"], worker_env(server, tmp_path), tmp_path / "w.log")
        with worker:
            assert server.wait_for_updates(6, 120), worker.log()
            signalled_at = time.monotonic()
            status = worker.stop(signal.SIGTERM)
        assert status == 0, worker.log()
        taken = list(server.handed_out)
        reported = [u.task_id for u in server.updates]
        assert sorted(reported) == sorted(taken), "a task was taken but not reported, or reported twice"
        assert all(u.status == "COMPLETED" and u.body["outputData"]["rows"] == [{"n": 400000}] for u in server.updates)
        assert any(u.received_at > signalled_at for u in server.updates), "tasks running at SIGTERM were not finished"
        assert server.pending("query_sql") == len(ids) - len(taken) > 0, "the worker kept taking tasks after SIGTERM"
        assert "sqladapter worker: stopped" in worker.log()


def test_register_flag_registers_the_task_definition_and_sigint_stops_cleanly(tmp_path):
    seed_with_cli(tmp_path)
    with ConductorServer("/api") as server:
        args = ["--register", "--task-name", "query_sqlite", "--poll-interval", "20"]
        with WorkerProcess(args, worker_env(server, tmp_path), tmp_path / "w.log") as worker:
            worker.wait_started()
            assert server.wait_for(lambda s: {"query_sql", "query_sqlite"} <= set(s.task_defs), 60), worker.log()
            assert worker.stop(signal.SIGINT) == 0, worker.log()
        task_def = server.task_defs["query_sql"]
        assert task_def["retryCount"] >= 1 and task_def["responseTimeoutSeconds"] > 300 and task_def["ownerEmail"]


def test_sdk_environment_variables_override_the_options(tmp_path):
    """CONDUCTOR_WORKER_* settings win over --threads/--domain/--poll-interval, as with any conductor-python worker."""
    seed_with_cli(tmp_path)
    with ConductorServer("/api") as server:
        red = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": "SELECT 1 AS one"}, domain="red")
        blue = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": "SELECT 2 AS two"}, domain="blue")
        env = worker_env(server, tmp_path, CONDUCTOR_WORKER_ALL_THREAD_COUNT="3", CONDUCTOR_WORKER_QUERY_SQL_DOMAIN="blue",
                         CONDUCTOR_WORKER_QUERY_SQL_POLL_INTERVAL="250", CONDUCTOR_LOG_LEVEL="INFO")
        args = ["--threads", "8", "--domain", "red", "--poll-interval", "20", "--worker-id", "worker-7"]
        with WorkerProcess(args, env, tmp_path / "w.log") as worker:
            line = worker.wait_started()
            assert wait_for_task(server, blue)["outputData"]["rows"] == [{"two": 2}]
            assert worker.stop() == 0
        assert "query_sql (3 threads, domain blue)" in line
        # The SDK's own line for the settings its task runner applied.
        assert "Conductor Worker[name=query_sql," in worker.log() and "poll_interval=250.0ms" in worker.log(), worker.log()
        assert {p.domain for p in server.polls} == {"blue"} and max(p.count for p in server.polls) == 3
        assert server.updates_for(red) == []
        assert {p.worker_id for p in server.polls} == {"worker-7"} and server.updates_for(blue)[0].body["workerId"] == "worker-7"


@pytest.mark.parametrize(
    "variable, setting, value, expected",
    [
        ("CONDUCTOR_WORKER_QUERY_SQL_POLL_INTERVAL", "poll_interval", "250", 250.0),
        ("CONDUCTOR_WORKER_ALL_POLL_INTERVAL", "poll_interval", "250", 250.0),
        ("CONDUCTOR_WORKER_QUERY_SQL_THREAD_COUNT", "thread_count", "3", 3),
        ("CONDUCTOR_WORKER_ALL_THREAD_COUNT", "thread_count", "3", 3),
        ("CONDUCTOR_WORKER_QUERY_SQL_DOMAIN", "domain", "blue", "blue"),
        ("CONDUCTOR_WORKER_ALL_DOMAIN", "domain", "blue", "blue"),
        ("CONDUCTOR_WORKER_QUERY_SQL_WORKER_ID", "worker_id", "worker-9", "worker-9"),
        ("CONDUCTOR_WORKER_ALL_WORKER_ID", "worker_id", "worker-9", "worker-9"),
    ],
)
def test_the_readmes_sdk_variables_are_the_spellings_the_sdk_reads(monkeypatch, variable, setting, value, expected):
    """The README names these variables; the SDK resolves its task runners' settings with the same function."""
    from sqladapter.engines import conductor

    worker = conductor.make_worker(threads=8, domain="red", poll_interval_ms=20, worker_id="worker-7")
    assert conductor.effective_settings(worker)[setting] != expected
    monkeypatch.setenv(variable, value)
    assert conductor.effective_settings(worker)[setting] == expected


def test_a_task_still_running_after_the_grace_period_is_abandoned_and_the_worker_exits(tmp_path):
    seed_with_cli(tmp_path)
    endless = SLOW_QUERY.replace("400000", "100000000")
    with ConductorServer("/api") as server:
        task_id = server.add_task("query_sql", {"connection_string": "fake_people.db", "query": endless})
        args = ["--grace-period", "0.5", "--poll-interval", "20"]
        with WorkerProcess(args, worker_env(server, tmp_path), tmp_path / "w.log") as worker:
            assert server.wait_for(lambda s: task_id in s.handed_out, 60), worker.log()
            started = time.monotonic()
            assert worker.stop(timeout=30) == 0, worker.log()
            assert time.monotonic() - started < 20
        assert "still busy after 0.5s; killing it" in worker.log()
        assert server.updates_for(task_id) == []  # the server times it out and hands it out again


def test_a_bug_fails_the_task_with_a_generic_message_and_logs_the_traceback(monkeypatch, caplog):
    """An exception that is not a SqlAdapterError is the worker's fault: FAILED (retryable), no details leak."""
    from conductor.client.http.models.task import Task

    from sqladapter import Runtime
    from sqladapter.engines import conductor

    class Broken(Runtime):
        def run(self, task_input=None, /, **fields):
            raise RuntimeError(f"internal state with postgresql://app:{PASSWORD}@db/x")

    task = Task(task_id="t-1", workflow_instance_id="wf-1", task_def_name="query_sql", input_data={"query": "SELECT 1"})
    with caplog.at_level("ERROR", logger="sqladapter.worker"), Broken() as runtime:
        result = conductor.run_task(runtime, task)
    assert result.status == "FAILED"
    assert result.output_data["error"]["type"] == "internal" and result.output_data["error"]["retryable"] is True
    assert "t-1" in result.reason_for_incompletion and PASSWORD not in json.dumps(result.to_dict(), default=str)
    assert "RuntimeError" in caplog.text  # the traceback is in the worker's log ...
    assert PASSWORD not in caplog.text  # ... without the password
