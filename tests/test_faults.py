"""Faults: connections killed mid-query, database servers restarted under a running worker, an
engine whose update call fails, and a worker process killed in the middle of a task.

Each fault must end in a retryable error or a transparent recovery, never in a crash, a lost
worker, or a task reported COMPLETED that did not complete.

Stopping and starting the shared MariaDB and PostgreSQL servers disturbs everyone using them,
so those tests run only with SQLADAPTER_FAULT_RESTARTS=1 (CI, which runs alone, sets it); they
restart the server in a `finally` whatever happens.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conductor_server import ConductorServer, _Handler
from security_databases import (
    DATABASE,
    MYSQL_URL,
    POSTGRES_URL,
    exclusive_use,
    mysql_admin,
    mysql_create_database,
    postgres_admin,
    postgres_create_database,
)
from servers import server_unavailable
from worker_process import WorkerProcess, descendants

from sqladapter import DatabaseUnavailableError, SqlAdapterError, run_query
from sqladapter.testing import report

RESTARTS = os.environ.get("SQLADAPTER_FAULT_RESTARTS") == "1"
_survived: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _figures(request):
    with exclusive_use():
        yield
    report(request.config, [f"faults survived: {len(_survived)} ({'; '.join(_survived)})"] if _survived else [])


# -- connections killed by the server -----------------------------------------------------------

HEAVY = {
    "mysql": "SELECT sum(a.seq * b.seq) AS s FROM seq_1_to_100000 a, seq_1_to_100000 b",
    "postgresql": "SELECT pg_sleep(20) AS s",
}
URLS = {"mysql": MYSQL_URL, "postgresql": POSTGRES_URL}


def _admin(dialect: str) -> Any:
    try:
        if dialect == "mysql":
            mysql_create_database()
            return mysql_admin()
        postgres_create_database()
        return postgres_admin()
    except Exception as exc:
        server_unavailable(f"{dialect} server unavailable: {exc}")


def _session_of(admin: Any, dialect: str, marker: str, timeout: float = 10.0) -> int:
    """The server-side id of the session running the query that contains `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dialect == "mysql":
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s AND info LIKE %s AND id <> CONNECTION_ID()",
                    (DATABASE, f"%{marker}%"),
                )
                row = cur.fetchone()
        else:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE %s AND pid <> pg_backend_pid() "
                "AND state = 'active'",
                (DATABASE, f"%{marker}%"),
            ).fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    raise AssertionError(f"no {dialect} session is running {marker!r}")


def _session_idle(admin: Any, dialect: str) -> list[int]:
    """Ids of the idle sessions sqladapter keeps open on the security database."""
    if dialect == "mysql":
        with admin.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s AND command = 'Sleep' AND id <> CONNECTION_ID()",
                (DATABASE,),
            )
            return [r[0] for r in cur.fetchall()]
    return [
        r[0]
        for r in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'idle' AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'",
            (DATABASE,),
        ).fetchall()
    ]


def _kill(admin: Any, dialect: str, session: int, how: str) -> None:
    if dialect == "mysql":
        with admin.cursor() as cur:
            cur.execute(f"KILL {'QUERY' if how == 'query' else 'CONNECTION'} {int(session)}")
    else:
        function = "pg_cancel_backend" if how == "query" else "pg_terminate_backend"
        admin.execute(f"SELECT {function}(%s)", (session,))


def _run_in_thread(**task: Any) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["output"] = run_query(**task)
        except SqlAdapterError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.servers
@pytest.mark.parametrize("how", ["query", "connection"])
@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_a_query_killed_by_the_server_is_a_retryable_error_and_the_next_task_succeeds(dialect, how):
    admin = _admin(dialect)
    try:
        url = URLS[dialect]
        assert run_query(connection_string=url, query="SELECT 1 AS ok")["rows"] == [{"ok": 1}]
        thread, outcome = _run_in_thread(connection_string=url, query=HEAVY[dialect], timeout_ms=60_000)
        _kill(admin, dialect, _session_of(admin, dialect, HEAVY[dialect][:30]), how)
        thread.join(30)
        assert not thread.is_alive()
        error = outcome.get("error")
        assert error is not None, f"the killed query returned {outcome.get('output')}"
        assert error.retryable, f"{type(error).__name__}: {error.message}"
        # The next task, on whatever connection the pool hands out, runs normally.
        assert run_query(connection_string=url, query="SELECT 2 AS ok")["rows"] == [{"ok": 2}]
        _survived.append(f"{dialect} kill {how} mid-query")
    finally:
        admin.close()


@pytest.mark.servers
@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_an_idle_pooled_connection_killed_by_the_server_is_replaced_without_an_error(dialect):
    admin = _admin(dialect)
    try:
        url = URLS[dialect]
        assert run_query(connection_string=url, query="SELECT 1 AS ok")["rows"] == [{"ok": 1}]
        idle = _session_idle(admin, dialect)
        assert idle, "sqladapter keeps no idle connection to kill"
        for session in idle:
            _kill(admin, dialect, session, "connection")
        assert run_query(connection_string=url, query="SELECT 3 AS ok")["rows"] == [{"ok": 3}]
        _survived.append(f"{dialect} idle connection killed")
    finally:
        admin.close()


# -- a test Conductor server that fails on purpose ------------------------------------------------


class _FaultHandler(_Handler):
    def _dispatch(self, method: str) -> None:
        fake: FaultyConductorServer = self.fake  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.rfile = io.BytesIO(raw)
        is_update = method == "POST" and self.path.split("?")[0] in (fake.base + "/tasks/update-v2", fake.base + "/tasks")
        fault = fake.next_fault(raw) if is_update else None
        if fault == "hang":
            # The update never reaches the engine: held here (the worker waits on its answer)
            # until the test lets it go, then refused.
            fake.hanging.append(raw)
            fake.release.wait(120)
            fault = "500"
        if fault == "500":
            fake.rejected.append(raw)
            return self._send(500, {"message": "injected failure", "status": 500})
        super()._dispatch(method)


class FaultyConductorServer(ConductorServer):
    """The test server, plus injected update failures, with Conductor's response timeout on.

    `faults[task_id]` lists what the next update attempts for that task meet: "500" (refused
    with HTTP 500, not recorded), or "hang" (held unanswered until `release` is set, then 500). A task handed out and not updated within
    `response_timeout_seconds` is timed out and a retry (a new taskId, same input) is queued,
    as Conductor does (the base server's `enforce_response_timeout`).
    """

    handler = _FaultHandler

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, enforce_response_timeout=True, **kwargs)
        self.faults: dict[str, list[str]] = {}
        self.rejected: list[bytes] = []
        self.hanging: list[bytes] = []
        self.release = threading.Event()

    def next_fault(self, raw: bytes) -> str | None:
        import json

        task_id = json.loads(raw or b"{}").get("taskId", "")
        with self._lock:
            queue = self.faults.get(task_id)
            return queue.pop(0) if queue else None


def _start_worker(server: ConductorServer, data_dir: Path, name: str, **env: str) -> WorkerProcess:
    worker = WorkerProcess(
        ["--threads", "2", "--poll-interval", "20"],
        {"CONDUCTOR_SERVER_URL": server.url, "SQLADAPTER_DATA_DIR": str(data_dir), **env},
        data_dir / f"{name}.log",
    ).start()
    worker.wait_started()
    return worker


def _wait_final(server: ConductorServer, task_id: str, timeout: float = 60) -> dict[str, Any]:
    assert server.wait_for(lambda s: any(u.task_id == task_id for u in s.updates), timeout), f"{task_id} never reported"
    return server.updates_for(task_id)[-1].body


@pytest.fixture
def people_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "people.db") as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.executemany("INSERT INTO people VALUES (?)", [("Ann",), ("Bob",)])
    conn.close()
    return data_dir


def test_update_calls_answered_with_500_are_retried_and_report_the_true_status(people_dir):
    server = FaultyConductorServer("/api", chain=False).start()
    worker = _start_worker(server, people_dir, "worker-500", SQLADAPTER_CONNECTION_DOWN="mysql://u:pw@127.0.0.1:9/x")
    try:
        ok, terminal, retryable = server.add_tasks(
            "query_sql",
            [
                {"connection_string": "people.db", "query": "SELECT name FROM people ORDER BY name"},
                {"connection_string": "people.db", "query": "DELETE FROM people"},
                {"connection": "down", "query": "SELECT 1"},
            ],
        )
        for task_id in (ok, terminal, retryable):
            server.faults[task_id] = ["500"]
        bodies = {task_id: _wait_final(server, task_id, timeout=90) for task_id in (ok, terminal, retryable)}
        # Each task was refused once (500), then accepted on the SDK's retry with its real status.
        assert len(server.rejected) == 3
        assert bodies[ok]["status"] == "COMPLETED" and bodies[ok]["outputData"]["rows"] == [{"name": "Ann"}, {"name": "Bob"}]
        assert bodies[terminal]["status"] == "FAILED_WITH_TERMINAL_ERROR"
        assert bodies[retryable]["status"] == "FAILED" and bodies[retryable]["outputData"]["error"]["retryable"] is True
        for task_id in (ok, terminal, retryable):
            assert len(server.updates_for(task_id)) == 1
        # The worker is still serving.
        assert worker.process.poll() is None
        after = server.add_task("query_sql", {"connection_string": "people.db", "query": "SELECT count(*) AS n FROM people"})
        assert _wait_final(server, after)["outputData"]["rows"] == [{"n": 2}]
        _survived.append("engine update answered 500")
    finally:
        assert worker.stop() == 0, worker.log()
        server.stop()


def test_an_update_whose_answer_never_arrives_is_sent_again_with_the_same_status(people_dir):
    """The engine recorded the result but the worker never got the answer (a timeout, a dropped
    connection): the SDK sends the same update again; no status changes on the way."""
    server = FaultyConductorServer("/api", chain=False)
    recorded = server._record_update
    dropped: list[str] = []

    def record_then_drop(endpoint: str, body: dict[str, Any]) -> Any:
        result = recorded(endpoint, body)
        if body.get("taskId") not in dropped:
            dropped.append(body.get("taskId"))
            raise ConnectionAbortedError("answer dropped")  # the handler dies: no response is sent
        return result

    server._record_update = record_then_drop  # type: ignore[method-assign]
    server.start()
    worker = _start_worker(server, people_dir, "worker-drop")
    try:
        ok, terminal = server.add_tasks(
            "query_sql",
            [
                {"connection_string": "people.db", "query": "SELECT name FROM people ORDER BY name"},
                {"connection_string": "people.db", "query": "UPDATE people SET name = 'x'"},
            ],
        )
        assert server.wait_for(lambda s: len(s.updates_for(ok)) >= 2 and len(s.updates_for(terminal)) >= 2, 90), worker.log()
        for task_id, status in ((ok, "COMPLETED"), (terminal, "FAILED_WITH_TERMINAL_ERROR")):
            bodies = [u.body for u in server.updates_for(task_id)]
            assert {b["status"] for b in bodies} == {status}
            assert all(b["outputData"] == bodies[0]["outputData"] for b in bodies)
        assert worker.process.poll() is None
        _survived.append("engine update answer lost")
    finally:
        assert worker.stop() == 0, worker.log()
        server.stop()


# -- the worker process killed mid-task -----------------------------------------------------------



def _holding(pid: int, path: Path) -> bool:
    target = str(path.resolve())
    try:
        return any(os.readlink(fd) == target for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def test_a_worker_process_killed_mid_task_never_reports_it_and_the_retry_completes(people_dir):
    server = FaultyConductorServer("/api", chain=False, response_timeout_seconds=3).start()
    worker = _start_worker(server, people_dir, "worker-kill")
    # An exclusive lock held here keeps the task's read waiting inside the worker: mid-task.
    blocker = sqlite3.connect(people_dir / "people.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        task_id = server.add_task("query_sql", {"connection_string": "people.db", "query": "SELECT name FROM people"})
        assert server.wait_for(lambda s: task_id in s.handed_out, 30)
        deadline, victim = time.monotonic() + 10, None
        while victim is None and time.monotonic() < deadline:
            victim = next((p for p in descendants(worker.process.pid) if _holding(p, people_dir / "people.db")), None)
            time.sleep(0.02)
        assert victim is not None, "no worker process has the database open"
        os.kill(victim, signal.SIGKILL)
        blocker.execute("ROLLBACK")
        # The engine times the task out and schedules a retry; the restarted process runs it.
        assert server.wait_for(lambda s: task_id in s.retries and s.retries[task_id] in s.final_updates(), 60), worker.log()
        retry = server.final_updates()[server.retries[task_id]]
        assert retry["status"] == "COMPLETED" and retry["outputData"]["rows"] == [{"name": "Ann"}, {"name": "Bob"}]
        assert server.updates_for(task_id) == [], "the killed task was reported"
        assert task_id in server.timed_out
        assert worker.process.poll() is None, "the worker itself died"
        _survived.append("worker process SIGKILLed mid-task")
    finally:
        blocker.close()
        worker.stop()
        server.stop()


# -- database servers stopped and started under a running worker -----------------------------------


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True, capture_output=True, timeout=60
    )


def _mysql_stop() -> None:
    subprocess.run(["mysqladmin", "-uroot", "-h127.0.0.1", "shutdown"], check=True, capture_output=True, timeout=60)


def _mariadbd_running() -> bool:
    status = ["start-stop-daemon", "--status", "--exec", "/usr/sbin/mariadbd"]
    return subprocess.run(status, capture_output=True, timeout=10).returncode == 0


def _mysql_start() -> None:
    # mysqladmin shutdown returns before the server has exited, and --oknodo takes a server
    # still shutting down for a running one: wait for it to be gone, or nothing would start.
    deadline = time.monotonic() + 60
    while _mariadbd_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(
        ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _wait_answering(dialect: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            (mysql_admin if dialect == "mysql" else postgres_admin)().close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


SERVERS = {
    "mysql": (_mysql_stop, _mysql_start, MYSQL_URL),
    "postgresql": (lambda: _pg_ctl("stop"), lambda: _pg_ctl("start"), POSTGRES_URL),
}


@pytest.mark.servers
@pytest.mark.skipif(not RESTARTS, reason="stops a shared database server: set SQLADAPTER_FAULT_RESTARTS=1 (CI does)")
@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_a_database_restart_under_a_running_worker_fails_only_the_tasks_in_between(dialect, people_dir):
    _admin(dialect).close()
    stop, start, url = SERVERS[dialect]
    server = ConductorServer("/api").start()
    worker = _start_worker(server, people_dir, f"worker-{dialect}-restart", SQLADAPTER_CONNECTION_SECURITY=url)
    task = {"connection": "security", "query": "SELECT 1 AS ok"}
    try:
        assert _wait_final(server, server.add_task("query_sql", task))["status"] == "COMPLETED"
        try:
            stop()
            down = _wait_final(server, server.add_task("query_sql", task))
        finally:
            start()
            _wait_answering(dialect)
        assert down["status"] == "FAILED", down
        assert down["outputData"]["error"]["type"] == DatabaseUnavailableError.type
        assert down["outputData"]["error"]["retryable"] is True
        # The same worker, never restarted, serves the next tasks on new connections.
        for _ in range(3):
            assert _wait_final(server, server.add_task("query_sql", task))["status"] == "COMPLETED"
        assert worker.process.poll() is None
        _survived.append(f"{dialect} server restarted under the worker")
    finally:
        worker.stop()
        server.stop()


def test_the_whole_worker_killed_mid_task_never_reports_it_and_a_new_worker_completes_the_retry(people_dir):
    """Every process of the worker SIGKILLed at once (a container or cgroup kill)."""
    server = FaultyConductorServer("/api", chain=False, response_timeout_seconds=3).start()
    worker = _start_worker(server, people_dir, "worker-kill-all")
    blocker = sqlite3.connect(people_dir / "people.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    replacement = None
    try:
        task_id = server.add_task("query_sql", {"connection_string": "people.db", "query": "SELECT name FROM people"})
        assert server.wait_for(lambda s: task_id in s.handed_out, 30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            _holding(p, people_dir / "people.db") for p in descendants(worker.process.pid)
        ):
            time.sleep(0.02)
        for pid in [worker.process.pid, *descendants(worker.process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.process.wait(10)
        blocker.execute("ROLLBACK")
        assert server.wait_for(lambda s: task_id in s.retries, 30)
        replacement = _start_worker(server, people_dir, "worker-replacement")
        assert server.wait_for(lambda s: s.retries[task_id] in s.final_updates(), 60), replacement.log()
        retry = server.final_updates()[server.retries[task_id]]
        assert retry["status"] == "COMPLETED" and retry["outputData"]["rows"] == [{"name": "Ann"}, {"name": "Bob"}]
        assert server.updates_for(task_id) == [], "the killed task was reported"
        _survived.append("whole worker SIGKILLed mid-task")
    finally:
        blocker.close()
        if replacement is not None:
            replacement.stop()
        server.stop()


# -- exactly-once writes: a result lost after the commit replays, never runs twice -------------------


@pytest.fixture
def shop_dir(tmp_path: Path) -> Path:
    from sqladapter import Runtime, ledger

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "shop.db") as conn:
        conn.execute("CREATE TABLE stock (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL)")
        conn.execute("INSERT INTO stock VALUES (1, 10)")
    conn.close()
    with Runtime(environ=_shop_env(data_dir)) as runtime:
        ledger.init(runtime, "shop")
    return data_dir


def _shop_env(data_dir: Path) -> dict[str, str]:
    return {
        "SQLADAPTER_DATA_DIR": str(data_dir),
        "SQLADAPTER_CONNECTION_SHOP": f"sqlite:///{data_dir / 'shop.db'}",
        "SQLADAPTER_CONNECTION_SHOP_WRITABLE": "1",
    }


def _qty(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "shop.db")
    try:
        return conn.execute("SELECT qty FROM stock WHERE id = 1").fetchone()[0]
    finally:
        conn.close()


def _ledger_rows(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "shop.db")
    try:
        return conn.execute("SELECT COUNT(*) FROM sqladapter_ledger").fetchone()[0]
    finally:
        conn.close()


_DECREMENT = {"connection": "shop", "statement": "UPDATE stock SET qty = qty - 1 WHERE id = 1", "expected_rows": 1}


def _start_write_worker(server: ConductorServer, data_dir: Path, name: str) -> WorkerProcess:
    worker = WorkerProcess(
        ["--threads", "2", "--poll-interval", "20", "--task-name", "execute_sql"],
        {"CONDUCTOR_SERVER_URL": server.url, **_shop_env(data_dir)},
        data_dir / f"{name}.log",
    ).start()
    worker.wait_started()
    return worker


def test_a_write_worker_killed_after_the_commit_replays_on_the_retry_and_writes_once(shop_dir):
    server = FaultyConductorServer("/api", chain=False, response_timeout_seconds=3).start()
    worker = _start_write_worker(server, shop_dir, "worker-write-kill")
    try:
        task_id = server.add_task("execute_sql", _DECREMENT)
        server.faults[task_id] = ["hang"]
        # The write committed, and its result is on its way to an engine that does not answer.
        assert server.wait_for(lambda s: len(s.hanging) == 1, 30), worker.log()
        assert _qty(shop_dir) == 9 and _ledger_rows(shop_dir) == 1
        victim = next((p for p in descendants(worker.process.pid) if _holding(p, shop_dir / "shop.db")), None)
        assert victim is not None, "no worker process has the database open"
        os.kill(victim, signal.SIGKILL)
        server.release.set()
        # The engine times the task out and hands its retry (same workflow, same reference) out again.
        assert server.wait_for(lambda s: task_id in s.retries and s.retries[task_id] in s.final_updates(), 60), worker.log()
        retry = server.final_updates()[server.retries[task_id]]
        assert retry["status"] == "COMPLETED", retry
        assert retry["outputData"]["replayed"] is True and retry["outputData"]["rowsAffected"] == 1
        assert _qty(shop_dir) == 9, "the write ran twice"
        assert server.updates_for(task_id) == []
        # A new task (another workflow) writes again: the key is per task, not per statement.
        again = server.add_task("execute_sql", _DECREMENT)
        assert _wait_final(server, again)["outputData"]["replayed"] is False
        assert _qty(shop_dir) == 8
        _survived.append("write worker SIGKILLed after the commit")
    finally:
        server.release.set()
        worker.stop()
        server.stop()


@pytest.mark.slow
def test_a_write_whose_update_is_refused_until_the_sdk_gives_up_replays_on_the_retry(shop_dir):
    server = FaultyConductorServer("/api", chain=False, response_timeout_seconds=3).start()
    worker = _start_write_worker(server, shop_dir, "worker-write-500")
    try:
        task_id = server.add_task("execute_sql", _DECREMENT)
        server.faults[task_id] = ["500"] * 10
        assert server.wait_for(lambda s: task_id in s.retries and s.retries[task_id] in s.final_updates(), 60), worker.log()
        retry = server.final_updates()[server.retries[task_id]]
        assert retry["status"] == "COMPLETED" and retry["outputData"]["replayed"] is True, retry
        # The SDK tries the first result's update four times (after 0, 10, 20 and 30 s) and gives up.
        assert server.wait_for(lambda s: len(s.rejected) >= 4, 90), worker.log()
        time.sleep(2)
        assert len(server.rejected) == 4
        assert server.updates_for(task_id) == []
        assert _qty(shop_dir) == 9 and _ledger_rows(shop_dir) == 1
        assert worker.process.poll() is None
        _survived.append("write result refused with 500 until the SDK gave up")
    finally:
        worker.stop()
        server.stop()
