"""Tasks per second through the real conductor-python TaskHandler, against a no-op worker.

One TaskHandler per thread count runs three workers side by side, each in its own process as
the SDK does it: `query_sql` (the project's worker, the tutorial's five-row SQLite query),
`noop` and `echo` (benchmarks/noop_worker.py; echo returns a stored query_sql output, so the
SDK carries the same rows without a query). The test server from tests/conductor_server.py
hands out tasks and chains the next one in each update-v2 answer, like Conductor. Rounds
alternate noop, echo and query tasks, N each; each round is timed from queueing to the last
update, and a figure is the median over rounds of one worker's tasks/s divided by another's.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
QUERY_INPUT = {"connection_string": "bench.db", "query": "SELECT * FROM people"}
GOAL = 0.9


def bench(*, required: bool, quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the results table, and reasons for anything not measured."""
    try:
        sys.path.insert(0, str(TESTS))
        from conductor_server import ConductorServer  # noqa: F401
        from sqladapter.engines import conductor  # noqa: F401
    except ImportError as exc:
        if required:
            raise
        return [], [f"through the SDK: {exc}"]
    rows: list[dict[str, Any]] = []
    rounds, seconds = (3, 0.6) if quick else (5, 1.5)
    for threads in (1, 8):
        print(f"sdk: {threads} thread(s)", file=sys.stderr)
        noop, echo, query = _measure(threads, rounds, seconds)
        scenario = f"through the SDK: small query, {threads} thread{'s' if threads > 1 else ''}"
        for subject, baseline, label, goal in (
            (query, noop, "query_sql / no-op worker, tasks/s", GOAL),
            (echo, noop, "echo (same output, no query) / no-op, tasks/s", None),
            (query, echo, "query_sql / echo, tasks/s", None),
        ):
            ratio = statistics.median(s / b for s, b in zip(subject, baseline))
            rows.append(
                {
                    "dialect": "sqlite",
                    "scenario": scenario,
                    "comparison": label,
                    "subject_s": 1 / statistics.median(subject),
                    "baseline_s": 1 / statistics.median(baseline),
                    "figure": f"{ratio:.2f}x ({statistics.median(subject):.0f} vs {statistics.median(baseline):.0f}/s)",
                    "goal": f">= {goal}x" if goal else "(for the analysis)",
                    "met": ratio >= goal if goal else None,
                }
            )
    return rows, []


def _measure(threads: int, rounds: int, seconds: float) -> tuple[list[float], list[float], list[float]]:
    from conductor.client.automator.task_handler import TaskHandler
    from conductor.client.configuration.configuration import Configuration
    from conductor.client.worker.worker import Worker
    from conductor_server import ConductorServer

    from sqladapter.engines.conductor import make_worker

    from .noop_worker import echo_task, noop_task

    with ConductorServer("/api") as server:
        # The worker processes are spawned: they read these when they start.
        os.environ.update(
            {"CONDUCTOR_SERVER_URL": server.url, "CONDUCTOR_HTTP2_ENABLED": "false", "CONDUCTOR_LOG_LEVEL": "WARNING"}
        )
        poll_ms = 100
        workers = [
            make_worker("query_sql", threads=threads, poll_interval_ms=poll_ms),
            Worker("noop", noop_task, poll_interval=poll_ms, thread_count=threads),
            Worker("echo", echo_task, poll_interval=poll_ms, thread_count=threads),
        ]
        handler = TaskHandler(workers=workers, configuration=Configuration(), scan_for_annotated_workers=False)
        handler.start_processes()
        try:
            if not server.wait_for(lambda s: {p.task_type for p in s.polls} >= {"query_sql", "noop", "echo"}, timeout=60):
                raise RuntimeError("the SDK's worker processes did not start polling within 60 s")
            # Warm: engines, imports and HTTP connections in every worker thread; and a
            # calibration of how many tasks make a round of about `seconds`.
            warm = 40 * threads
            _round(server, "noop", {}, warm)
            _round(server, "echo", QUERY_INPUT, warm)
            rate = _round(server, "query_sql", QUERY_INPUT, warm)
            count = max(50, int(rate * seconds))
            noop: list[float] = []
            echo: list[float] = []
            query: list[float] = []
            for _ in range(rounds):
                noop.append(_round(server, "noop", {}, count))
                echo.append(_round(server, "echo", QUERY_INPUT, count))
                query.append(_round(server, "query_sql", QUERY_INPUT, count))
        finally:
            # Stopping kills worker processes in the middle of long polls; the server's
            # threads answering those find the socket closed, which is expected here.
            server._httpd.handle_error = lambda request, address: None
            handler.stop_processes()
    return noop, echo, query


def _round(server: Any, task_type: str, task_input: dict[str, Any], count: int) -> float:
    before = len(server.updates)
    started = time.perf_counter()
    server.add_tasks(task_type, [task_input] * count)
    if not server.wait_for_updates(before + count, timeout=120):
        raise RuntimeError(f"{task_type}: {len(server.updates) - before} of {count} tasks reported within 120 s")
    elapsed = time.perf_counter() - started
    failed = [u.body.get("reasonForIncompletion") for u in server.updates[before:] if u.status != "COMPLETED"]
    if failed:
        raise RuntimeError(f"{task_type}: {len(failed)} of {count} tasks did not complete, e.g. {failed[0]}")
    return count / elapsed
