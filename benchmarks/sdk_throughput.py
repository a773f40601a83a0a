"""Tasks per second through the real conductor-python TaskHandler, against a no-op worker.

One TaskHandler per thread count runs the workers side by side, each in its own process as
the SDK does it: `query_sql` (the project's worker, the SQLite point lookup by zip code on
people_100k, one row), `noop` and `echo` (benchmarks/noop_worker.py; echo returns a stored
query_sql output, so the SDK carries the same row without a query). At 8 threads, the same
8 tasks at once also run as 2 worker processes of 4 threads each (`sqladapter worker
--processes 2 --threads 4`), for query_sql and for the no-op worker. The test server from
tests/conductor_server.py hands out tasks and chains the next one in each update-v2 answer,
like Conductor. Rounds alternate the task types, N tasks each; each round is timed from
queueing to the last update, and a figure is the median over rounds of one worker's tasks/s
divided by another's.

    .venv/bin/python -m benchmarks.sdk_throughput            the rows `make bench` reports
    .venv/bin/python -m benchmarks.sdk_throughput --options  the SDK's options, side by side
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
# The zip code of one row of people_100k (benchmarks/run.py's ZIP).
QUERY_INPUT = {
    "connection_string": "bench.db",
    "query": "SELECT * FROM people_100k WHERE zip_code = :zip",
    "parameters": {"zip": "04242"},
}
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
    _ensure_data()
    rows: list[dict[str, Any]] = []
    rounds, seconds = (3, 0.6) if quick else (5, 1.5)
    for threads in (1, 8):
        print(f"sdk: {threads} thread(s)", file=sys.stderr)
        subjects = _default_subjects(threads)
        rates = _measure(subjects, threads, rounds, seconds)
        scenario = f"through the SDK: point query, {threads} thread{'s' if threads > 1 else ''}"
        comparisons = [
            ("query_sql", "noop", "query_sql / no-op worker, tasks/s", GOAL),
            ("echo", "noop", "echo (same output, no query) / no-op, tasks/s", None),
            ("query_sql", "echo", "query_sql / echo, tasks/s", None),
        ]
        if threads > 1:
            comparisons[1:1] = [
                ("query_sql_p2", "noop", "query_sql, 2 processes x 4 threads / no-op worker (1 x 8), tasks/s", GOAL),
                ("query_sql_p2", "noop_p2", "query_sql, 2 x 4 / no-op worker, 2 x 4, tasks/s", None),
            ]
        for subject_name, baseline_name, label, goal in comparisons:
            subject, baseline = rates[subject_name], rates[baseline_name]
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


def _ensure_data() -> None:
    from . import datasets

    data_dir = Path(os.environ.setdefault("SQLADAPTER_DATA_DIR", str(HERE / ".data")))
    data_dir.mkdir(exist_ok=True)
    datasets.ensure_sqlite(data_dir / "bench.db")


# A subject: its task type, the SDK workers (one process each) serving it, and its task input.
Subject = tuple[str, list[Any], dict[str, Any]]


def _default_subjects(threads: int) -> list[Subject]:
    from conductor.client.worker.worker import Worker

    from sqladapter.engines.conductor import make_worker

    from .noop_worker import echo_task, noop_task

    poll_ms = 100
    subjects: list[Subject] = [
        ("noop", [Worker("noop", noop_task, poll_interval=poll_ms, thread_count=threads)], {}),
        ("echo", [Worker("echo", echo_task, poll_interval=poll_ms, thread_count=threads)], QUERY_INPUT),
        ("query_sql", [make_worker("query_sql", threads=threads, poll_interval_ms=poll_ms)], QUERY_INPUT),
    ]
    if threads > 1:
        half = threads // 2
        subjects += [
            ("noop_p2", [Worker("noop_p2", noop_task, poll_interval=poll_ms, thread_count=half) for _ in range(2)], {}),
            ("query_sql_p2", [make_worker("query_sql_p2", threads=half, poll_interval_ms=poll_ms) for _ in range(2)],
             QUERY_INPUT),
        ]
    return subjects


def _measure(subjects: list[Subject], threads: int, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Tasks per second of each subject, one figure per round, all under one TaskHandler."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from conductor.client.automator.task_handler import TaskHandler
    from conductor.client.configuration.configuration import Configuration
    from conductor_server import ConductorServer

    with ConductorServer("/api") as server:
        # The worker processes are spawned: they read these when they start.
        os.environ.update(
            {"CONDUCTOR_SERVER_URL": server.url, "CONDUCTOR_HTTP2_ENABLED": "false", "CONDUCTOR_LOG_LEVEL": "WARNING"}
        )
        workers = [worker for _, served_by, _ in subjects for worker in served_by]
        handler = TaskHandler(workers=workers, configuration=Configuration(), scan_for_annotated_workers=False)
        handler.start_processes()
        try:
            names = {name for name, _, _ in subjects}
            if not server.wait_for(lambda s: {p.task_type for p in s.polls} >= names, timeout=60):
                raise RuntimeError("the SDK's worker processes did not start polling within 60 s")
            # Warm: engines, imports and HTTP connections in every worker thread; and a
            # calibration of how many tasks make a round of about `seconds` for the slowest.
            warm = 40 * threads
            rate = min(_round(server, name, task_input, warm) for name, _, task_input in subjects)
            count = max(50, int(rate * seconds))
            rates: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(rounds):
                for name, _, task_input in subjects:
                    rates[name].append(_round(server, name, task_input, count))
        finally:
            # Stopping kills worker processes in the middle of long polls; the server's
            # threads answering those find the socket closed, which is expected here.
            server._httpd.handle_error = lambda request, address: None
            handler.stop_processes()
    return rates


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


# -- the SDK's options side by side (--options) ----------------------------------------------
# Worker functions and classes live at module level: the SDK's spawned processes import them.


async def query_sql_async_inline() -> Any:
    """query_sql as an async worker (the SDK's AsyncTaskRunner), the query run on its event loop."""
    from conductor.client.context.task_context import get_task_context

    from sqladapter.engines.conductor import execute_query_task

    # The async runner fills parameters by name only; the task itself is in the task context.
    return execute_query_task(get_task_context().task)


async def query_sql_async_thread() -> Any:
    """query_sql as an async worker, the query handed to a thread so the loop keeps polling."""
    from conductor.client.context.task_context import get_task_context

    from sqladapter.engines.conductor import execute_query_task

    return await asyncio.to_thread(execute_query_task, get_task_context().task)


async def noop_async() -> Any:
    """The no-op worker as an async worker: the async runner's own ceiling."""
    from conductor.client.context.task_context import get_task_context

    from .noop_worker import noop_task

    return noop_task(get_task_context().task)


def _switch_interval_worker(name: str, threads: int, seconds: float) -> Any:
    from sqladapter.engines.conductor import execute_query_task

    worker = __getattr__("_SwitchIntervalWorker")(task_definition_name=name, execute_function=execute_query_task, poll_interval=100,
                                   thread_count=threads, lease_extend_enabled=True)
    worker.switch_interval = seconds
    return worker


def _switch_interval_class() -> type:
    from sqladapter.engines.conductor import QueryWorker

    class SwitchIntervalWorker(QueryWorker):
        """query_sql with the interpreter's thread switch interval changed in its process (not an SDK option)."""

        switch_interval = 0.005

        def __setstate__(self, state: dict[str, Any]) -> None:
            super().__setstate__(state)
            sys.setswitchinterval(self.switch_interval)

    SwitchIntervalWorker.__qualname__ = SwitchIntervalWorker.__name__ = "_SwitchIntervalWorker"
    return SwitchIntervalWorker


def __getattr__(name: str) -> Any:
    # Made on first use, so that importing this module does not import the SDK; pickled by
    # this name, so spawned processes find it.
    if name == "_SwitchIntervalWorker":
        cls = _switch_interval_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def _option_subjects(threads: int) -> list[tuple[Subject, str]]:
    from conductor.client.worker.worker import Worker

    from sqladapter.engines.conductor import make_worker

    from .noop_worker import noop_task

    poll_ms = 100
    no_lease = make_worker("query_sql_no_lease", threads=threads, poll_interval_ms=poll_ms)
    no_lease.lease_extend_enabled = False
    subjects = [
        (("noop", [Worker("noop", noop_task, poll_interval=poll_ms, thread_count=threads)], {}),
         "no-op worker, thread pool (the baseline)"),
        (("query_sql", [make_worker("query_sql", threads=threads, poll_interval_ms=poll_ms)], QUERY_INPUT),
         "query_sql as shipped: thread pool, lease extension on"),
        (("query_sql_no_lease", [no_lease], QUERY_INPUT), "query_sql, lease extension off"),
        (("noop_async", [Worker("noop_async", noop_async, poll_interval=poll_ms, thread_count=threads)], {}),
         "no-op worker, async (AsyncTaskRunner, thread_count = concurrency on one loop)"),
        (("query_sql_async", [Worker("query_sql_async", query_sql_async_inline, poll_interval=poll_ms,
                                     thread_count=threads)], QUERY_INPUT),
         "query_sql, async, the query on the event loop"),
        (("query_sql_async_thread", [Worker("query_sql_async_thread", query_sql_async_thread, poll_interval=poll_ms,
                                            thread_count=threads)], QUERY_INPUT),
         "query_sql, async, the query in asyncio.to_thread"),
        (("query_sql_switch", [_switch_interval_worker("query_sql_switch", threads, 0.001)], QUERY_INPUT),
         "query_sql, sys.setswitchinterval(0.001) in its process (ours, not an SDK option)"),
    ]
    if threads > 1:
        half = threads // 2
        subjects += [
            (("noop_p2", [Worker("noop_p2", noop_task, poll_interval=poll_ms, thread_count=half) for _ in range(2)], {}),
             f"no-op worker, 2 processes x {half} threads"),
            (("query_sql_p2", [make_worker("query_sql_p2", threads=half, poll_interval_ms=poll_ms) for _ in range(2)],
              QUERY_INPUT), f"query_sql, 2 processes x {half} threads (--processes 2)"),
        ]
    return subjects


def options(threads_list: list[int], rounds: int, seconds: float) -> list[str]:
    """A table of every option's tasks/s as a ratio to the no-op worker's in the same rounds."""
    _ensure_data()
    lines = ["| threads | worker | / no-op worker | tasks/s |", "|---:|---|---:|---:|"]
    for threads in threads_list:
        print(f"sdk options: {threads} thread(s)", file=sys.stderr)
        described = _option_subjects(threads)
        rates = _measure([subject for subject, _ in described], threads, rounds, seconds)
        for (name, _, _), text in described:
            ratio = statistics.median(s / b for s, b in zip(rates[name], rates["noop"]))
            lines.append(f"| {threads} | {text} | {ratio:.2f}x | {statistics.median(rates[name]):.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--options", action="store_true", help="measure the SDK's options side by side")
    parser.add_argument("--threads", default="1,8", help="thread counts for --options (default 1,8)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run, not a result)")
    args = parser.parse_args(argv)
    rounds, seconds = (3, 0.6) if args.quick else (5, 1.5)
    if args.options:
        print("\n".join(options([int(t) for t in args.threads.split(",")], rounds, seconds)))
        return 0
    rows, _ = bench(required=True, quick=args.quick)
    for row in rows:
        met = {True: "met", False: "NOT met", None: ""}[row["met"]]
        print(f"{row['scenario']} | {row['comparison']} | {row['figure']} | {row['goal']} {met}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
