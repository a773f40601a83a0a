"""Every place the Conductor binding reaches past conductor-python 2.0's public API, in one file.

The SDK gives a worker no handle on the TaskRunner that drives it, no way to end the update-v2
chain (where each task's update answers with the next task), and no drain on stop: its
`stop_processes` kills worker processes mid-task. What sqladapter needs of those is done
here, one small function per internal it touches, so that an SDK upgrade breaks this file
and tests/test_worker.py, and nothing else. pyproject pins conductor-python to 2.0.x for it.
"""

from __future__ import annotations

import sys
from typing import Any

from conductor.client.automator.task_handler import TaskHandler
from conductor.client.automator.task_runner import TaskRunner


def find_runner(frame: Any) -> TaskRunner | None:
    """The TaskRunner driving this worker process: always up the main thread's stack
    (TaskRunner.run), which is where signals land and where the poll loop reads `paused`."""
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, TaskRunner):
            return candidate
        frame = frame.f_back
    return None


def end_update_chains(runner: TaskRunner) -> None:
    """Each task's update stops asking for the next task: update-v2 answers with the next task
    and the SDK runs it at once; the v1 update answers nothing (TaskRunner._use_update_v2)."""
    runner._use_update_v2 = False


def tasks_running(runner: TaskRunner) -> bool:
    """Whether the runner still has a task in hand (TaskRunner._running_tasks)."""
    return not all(future.done() for future in list(runner._running_tasks))


def unpickled_by_spawn() -> bool:
    """Whether the caller runs inside multiprocessing's spawn bootstrap (how the SDK starts each
    worker process): the one moment to install that process's signal handler."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "spawn_main" and frame.f_globals.get("__name__") == "multiprocessing.spawn":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def stop_restarting(handler: TaskHandler) -> None:
    """The SDK's monitor restarts worker processes that exit; on a drain they are meant to
    (TaskHandler._monitor_stop_event)."""
    handler._monitor_stop_event.set()


def worker_processes(handler: TaskHandler) -> list[Any]:
    """The worker processes still alive (TaskHandler.task_runner_processes)."""
    return [p for p in handler.task_runner_processes if p is not None and p.is_alive()]
