"""The Conductor workers the SDK benchmark measures query_sql against.

    noop_task  completes at once with a one-key output: the SDK's ceiling
    echo_task  completes at once with a stored query_sql output of the same query: what the
               SDK itself spends carrying those rows (sanitising, JSON, HTTP), without a query

No `from __future__ import annotations` here: the SDK reads the worker function's
annotations at run time and gives a function annotated `Task` the whole task.
"""

from conductor.client.http.models.task import Task
from conductor.client.http.models.task_result import TaskResult
from conductor.client.http.models.task_result_status import TaskResultStatus


def noop_task(task: Task) -> TaskResult:
    """Complete the task at once with a one-key output."""
    result = TaskResult(task_id=task.task_id, workflow_instance_id=task.workflow_instance_id, worker_id=task.worker_id)
    result.status = TaskResultStatus.COMPLETED
    result.output_data = {"ok": True}
    return result


_echoed = {}


def echo_task(task: Task) -> TaskResult:
    """Complete the task at once with the output query_sql gave for the same input (kept)."""
    key = repr(sorted(task.input_data.items()))
    output = _echoed.get(key)
    if output is None:
        from sqladapter import run_query

        output = _echoed[key] = run_query(task.input_data)
    result = TaskResult(task_id=task.task_id, workflow_instance_id=task.workflow_instance_id, worker_id=task.worker_id)
    result.status = TaskResultStatus.COMPLETED
    result.output_data = output
    return result
