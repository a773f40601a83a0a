"""`sqladapter worker --engine rochallor`: the real workflow_sdk Runner against tests/rochallor_server.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from rochallor_server import RochallorServer
from worker_process import WorkerProcess

from sqladapter.errors import UnknownDialectError
from sqladapter.runtime import default

pytest.importorskip("workflow_sdk", reason="the rochallor extra is not installed: pip install -e '.[rochallor]'")

PASSWORD = "s3cret-Pw-42"
SLOW_QUERY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) SELECT count(*) AS n FROM c"


def seed_with_cli(data_dir: Path, *args: str) -> None:
    env = {"SQLADAPTER_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "sqladapter", "seed", *args], env=env, cwd=data_dir, check=True, capture_output=True)


def has_dialect(name: str) -> bool:
    try:
        default().registry.for_backend(name)
    except UnknownDialectError:
        return False
    return True


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RochallorServer, WorkerProcess]]:
    data_dir = tmp_path_factory.mktemp("rochallor-data")
    seed_with_cli(data_dir)
    if has_dialect("duckdb"):
        seed_with_cli(data_dir, "people.duckdb")
    server = RochallorServer().start()
    env = {
        "SQLADAPTER_DATA_DIR": str(data_dir),
        "SQLADAPTER_CONNECTION_DOWN": f"postgresql://postgres:{PASSWORD}@127.0.0.1:9/test",
    }
    args = ["--engine", "rochallor", "--url", server.url, "--task-name", "query_sqlite", "--parallelism", "2"]
    worker = WorkerProcess(args, env, data_dir / "worker.log").start()
    worker.wait_started()
    yield server, worker
    status = worker.stop()
    server.stop()
    assert status == 0, worker.log()


def wait_for_job(server: RochallorServer, job_id: str, timeout: float = 60) -> tuple[str, dict]:
    deadline = time.monotonic() + timeout
    while job_id not in server.results:
        assert time.monotonic() < deadline, f"{job_id} never reported"
        time.sleep(0.02)
    return server.results[job_id]


def test_success_puts_the_output_under_one_variable(served):
    server, worker = served
    job_id = server.add_job(
        "query_sql",
        {
            "connection_string": "fake_people.db",
            "query": "SELECT name, surname FROM people WHERE zip_code = :zip",
            "parameters": {"zip": "12345"},
            "orderId": "A-17",  # the instance's own variables are not query fields ...
            "sqlResult": {"from": "an earlier step"},
        },
    )
    kind, body = wait_for_job(server, job_id)
    assert kind == "complete"
    assert list(body["variables"]) == ["sqlResult"]  # ... and only the result variable is written back
    assert body["variables"]["sqlResult"]["rows"] == [{"name": "John", "surname": "Doe"}]
    assert "rochallor" in worker.wait_started() and "query_sql, query_sqlite" in worker.wait_started()


def test_alias_job_type_is_served(served):
    server, _ = served
    job_id = server.add_job("query_sqlite", {"connection_string": "fake_people.db", "query": "Select * from people"})
    kind, body = wait_for_job(server, job_id)
    assert kind == "complete" and body["variables"]["sqlResult"]["rowCount"] == 5


def test_terminal_error_is_not_retried(served):
    server, _ = served
    job_id = server.add_job("query_sql", {"connection_string": "fake_people.db", "query": "DROP TABLE people"})
    kind, body = wait_for_job(server, job_id)
    assert kind == "fail"
    assert body["retryable"] is False
    assert body["errorMessage"].startswith("not_read_only: ")


def test_database_down_is_retryable_without_the_password(served):
    server, worker = served
    if not has_dialect("postgresql"):
        pytest.skip("the postgresql dialect is not installed: pip install -e plugins/sqladapter-postgresql")
    job_id = server.add_job("query_sql", {"connection": "down", "query": "SELECT 1"})
    kind, body = wait_for_job(server, job_id)
    assert kind == "fail"
    assert body["retryable"] is True
    assert body["errorMessage"].startswith("database_unavailable: ")
    assert PASSWORD not in json.dumps(body) and PASSWORD not in worker.log()


def test_dates_and_decimals_arrive_as_plain_json(served):
    """The SDK cannot encode Decimal or datetime; the JSON contract has already turned them into strings."""
    server, _ = served
    if not has_dialect("duckdb"):
        pytest.skip("the duckdb dialect is not installed: pip install -e plugins/sqladapter-duckdb")
    job_id = server.add_job(
        "query_sql",
        {
            "connection_string": "people.duckdb",
            "query": "SELECT DATE '2024-01-02' AS d, TIMESTAMP '2024-01-02 03:04:05' AS ts, 1.50::DECIMAL(4,2) AS m",
        },
    )
    kind, body = wait_for_job(server, job_id)
    assert kind == "complete", body
    assert body["variables"]["sqlResult"]["rows"] == [{"d": "2024-01-02", "ts": "2024-01-02T03:04:05", "m": "1.50"}]


def test_sigterm_lets_running_jobs_report_and_takes_no_more(tmp_path):
    seed_with_cli(tmp_path)
    with RochallorServer() as server:
        ids = [server.add_job("query_sql", {"connection_string": "fake_people.db", "query": SLOW_QUERY}) for _ in range(30)]
        args = ["--engine", "rochallor", "--url", server.url, "--parallelism", "2", "--poll-interval", "20",
                "--result-variable", "count", "--worker-id", "sql-worker-1"]
        with WorkerProcess(args, {"SQLADAPTER_DATA_DIR": str(tmp_path)}, tmp_path / "w.log") as worker:
            worker.wait_started()
            # Signal while jobs are running: some reported, more handed out than reported.
            mid_run = lambda s: len(s.results) >= 2 and len(s.handed_out) > len(s.results)  # noqa: E731
            assert server.wait_for(mid_run, 60), worker.log()
            signalled_at = time.monotonic()
            status = worker.stop(signal.SIGTERM)
        assert status == 0, worker.log()
        assert any(at > signalled_at for at in server.reported_at.values()), "jobs running at SIGTERM were abandoned"
        assert sorted(server.results) == sorted(server.handed_out), "a job was taken but never reported"
        assert all(kind == "complete" and body["variables"] == {"count": {**body["variables"]["count"], "rows": [{"n": 400000}]}}
                   for kind, body in server.results.values())
        assert server.pending() == len(ids) - len(server.handed_out) > 0
        assert {poll["workerId"] for poll in server.polls} == {"sql-worker-1"}
        assert {body["workerId"] for _, body in server.results.values()} == {"sql-worker-1"}


def test_execute_sql_is_served_when_asked_and_a_retried_step_replays(tmp_path):
    import sqlite3

    from sqladapter import Runtime, ledger

    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE stock (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL)")
        conn.execute("INSERT INTO stock VALUES (1, 10)")
    conn.close()
    env = {"SQLADAPTER_DATA_DIR": str(tmp_path), "SQLADAPTER_CONNECTION_SHOP": f"sqlite:///{path}",
           "SQLADAPTER_CONNECTION_SHOP_WRITABLE": "1"}
    with Runtime(environ=env) as runtime:
        ledger.init(runtime, "shop")
    decrement = {"connection": "shop", "statement": "UPDATE stock SET qty = qty - 1 WHERE id = 1", "expected_rows": 1,
                 "orderId": "A-17"}

    def qty() -> int:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT qty FROM stock").fetchone()[0]
        finally:
            conn.close()

    with RochallorServer() as server:
        args = ["--engine", "rochallor", "--url", server.url, "--task-name", "execute_sql", "--poll-interval", "20"]
        with WorkerProcess(args, env, tmp_path / "w.log") as worker:
            assert "execute_sql" in worker.wait_started()
            first = server.add_job("execute_sql", decrement, instanceId="instance-order-17", stepId="reserve")
            kind, body = wait_for_job(server, first)
            assert kind == "complete", body
            assert body["variables"]["sqlResult"]["replayed"] is False and qty() == 9
            # The engine runs the same step of the same instance again (its result was lost).
            retry = server.add_job("execute_sql", decrement, instanceId="instance-order-17", stepId="reserve")
            kind, body = wait_for_job(server, retry)
            assert kind == "complete" and body["variables"]["sqlResult"]["replayed"] is True
            assert qty() == 9, "the retried step wrote again"
            # query_sql on the same connection still cannot write.
            refused = server.add_job("query_sql", {"connection": "shop", "query": "DELETE FROM stock"})
            kind, body = wait_for_job(server, refused)
            assert kind == "fail" and body["retryable"] is False and qty() == 9
            # Another step writes.
            other = server.add_job("execute_sql", decrement, instanceId="instance-order-17", stepId="reserve-again")
            assert wait_for_job(server, other)[1]["variables"]["sqlResult"]["replayed"] is False and qty() == 8
