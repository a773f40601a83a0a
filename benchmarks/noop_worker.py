"""The no-op Conductor worker the SDK benchmark measures against: the SDK's ceiling.

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
