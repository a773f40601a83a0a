"""Load: 10,000 query_sql tasks through the test Conductor server, one worker with 8 threads,
against MariaDB. None lost, none reported twice, each with its own answer, and the worker's
memory flat: at the end within 20% of what it was after the first 1,000 tasks.
"""

from __future__ import annotations

import time

import pytest
from conductor_server import ConductorServer
from security_databases import MYSQL_URL, exclusive_use, make_target
from servers import server_unavailable
from worker_process import WorkerProcess, descendants, memory_kb

from sqladapter.testing import report
from sqladapter.testing.hostile import make_outside

TASKS = 10_000
SAMPLE_EVERY = 1_000
THREADS = 8




def _task(n: int) -> tuple[dict, str]:
    """The n-th task's input and the status it must end with: mostly queries, some refusals
    and some database errors, so the error paths run under load too."""
    if n % 50 == 0:
        return {"connection": "load", "query": "DELETE FROM people"}, "FAILED_WITH_TERMINAL_ERROR"
    if n % 97 == 0:
        return {"connection": "load", "query": "SELECT * FROM no_such_table"}, "FAILED_WITH_TERMINAL_ERROR"
    person = n % 5 + 1
    return (
        {
            "connection": "load",
            "query": "SELECT id, name, zip_code FROM people WHERE id = :id",
            "parameters": {"id": person},
        },
        "COMPLETED",
    )


@pytest.mark.slow
@pytest.mark.servers
def test_ten_thousand_tasks_none_lost_none_twice_memory_flat(tmp_path, request):
    with exclusive_use():
        outside = make_outside()
        try:
            target = make_target("mysql", tmp_path, outside)
        except Exception as exc:
            outside.remove()
            server_unavailable(f"mysql server unavailable: {exc}")
        target.close()
        outside.remove()

        server = ConductorServer("/api").start()
        worker = WorkerProcess(
            ["--threads", str(THREADS), "--poll-interval", "10"],
            {"CONDUCTOR_SERVER_URL": server.url, "SQLADAPTER_DATA_DIR": str(tmp_path), "SQLADAPTER_CONNECTION_LOAD": MYSQL_URL},
            tmp_path / "worker.log",
        ).start()
        try:
            worker.wait_started()
            expected = {}
            inputs = []
            for n in range(1, TASKS + 1):
                task, status = _task(n)
                inputs.append(task)
                expected[n] = status
            ids = server.add_tasks("query_sql", inputs)
            started = time.monotonic()
            samples: list[tuple[int, int, int]] = []  # (tasks done, worker tree RSS kB, largest process RSS kB)
            for done in range(SAMPLE_EVERY, TASKS + 1, SAMPLE_EVERY):
                assert server.wait_for_updates(done, timeout=300), f"only {len(server.updates)} of {done} tasks reported"
                rss = [memory_kb(pid) for pid in [worker.process.pid, *descendants(worker.process.pid)]]
                samples.append((done, sum(rss), max(rss)))
            elapsed = time.monotonic() - started
            # Let any duplicate report arrive before counting.
            time.sleep(1.0)

            by_task: dict[str, list[dict]] = {}
            for update in list(server.updates):
                by_task.setdefault(update.task_id, []).append(update.body)
            lost = [task_id for task_id in ids if task_id not in by_task]
            twice = [task_id for task_id, bodies in by_task.items() if len(bodies) > 1]
            assert not lost, f"{len(lost)} tasks never reported, e.g. {lost[:5]}"
            assert not twice, f"{len(twice)} tasks reported more than once, e.g. {twice[:5]}"
            assert server.pending("query_sql") == 0
            wrong = []
            for n, task_id in enumerate(ids, 1):
                body = by_task[task_id][0]
                if body["status"] != expected[n]:
                    wrong.append((task_id, body["status"], body.get("reasonForIncompletion")))
                elif expected[n] == "COMPLETED" and body["outputData"]["rows"][0]["id"] != n % 5 + 1:
                    wrong.append((task_id, "wrong row", body["outputData"]["rows"]))
            assert not wrong, f"{len(wrong)} tasks with the wrong answer, e.g. {wrong[:3]}"

            first, last = samples[0], samples[-1]
            report(
                request.config,
                [
                    f"load: {TASKS} tasks, {THREADS} threads, MariaDB: {elapsed:.1f}s ({TASKS / elapsed:.0f} tasks/s), "
                    f"0 lost, 0 reported twice",
                    "load: worker RSS (all processes / largest) by tasks done: "
                    + ", ".join(f"{done}: {total / 1024:.1f}/{largest / 1024:.1f} MB" for done, total, largest in samples),
                ],
            )
            assert last[1] <= first[1] * 1.2, f"worker RSS grew from {first[1]} kB to {last[1]} kB: {samples}"
            assert last[2] <= first[2] * 1.2, f"worker process RSS grew from {first[2]} kB to {last[2]} kB: {samples}"
            assert worker.process.poll() is None
        finally:
            status = worker.stop()
            server.stop()
        assert status == 0, worker.log()[-3000:]
