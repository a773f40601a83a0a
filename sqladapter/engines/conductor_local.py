"""`sqladapter run`: run a Conductor workflow definition locally, without a server.

A dry-run aid for trying a workflow file and for tests, not an engine. It runs the workflow's
tasks in order, each a SIMPLE task whose name the local worker serves (`query_sql` and the
`--task-name` aliases), through the same worker function the Conductor worker runs. Inputs
may use `${workflow.input.x}`, `${ref.output.path}` (e.g. `${people_ref.output.rows[0].name}`)
and `${ref.input.path}`; the workflow's `outputParameters` are resolved the same way, and
when there are none the output is the last task's, as in Conductor. Any other task type or
expression is refused before anything runs.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..errors import InputError, SqlAdapterError

if TYPE_CHECKING:
    from ..runtime import Runtime

# Installed wheels carry the workflows inside the package; a source checkout keeps them at the top.
_HERE = Path(__file__).resolve().parent.parent  # the sqladapter package
WORKFLOWS_DIR = _HERE / "workflows" if (_HERE / "workflows").is_dir() else _HERE.parent / "workflows"

_EXPRESSION = re.compile(r"\$\{([^{}]*)\}")
_PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]")


class NotSupportedLocallyError(SqlAdapterError):
    """The workflow uses a task type or expression that only a Conductor server runs."""

    type = "not_supported_locally"


def workflow_files(directory: Path = WORKFLOWS_DIR) -> list[Path]:
    """The workflow definitions shipped in workflows/, by name."""
    return sorted(directory.glob("*.json"))


def load_workflow(path: str | Path) -> dict[str, Any]:
    """Read a workflow definition file and check it against conductor-python's WorkflowDef."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no workflow file {path}") from None
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from None
    check_workflow(data, source=str(path))
    return data


def check_workflow(data: Any, source: str = "the workflow") -> Any:
    """Refuse a definition conductor-python's WorkflowDef would not carry as written; return the model.

    The SDK's models drop keys they do not know without a word, so a misspelt key (say
    `inputParamters`) would vanish on registration: the definition must round-trip unchanged.
    """
    from conductor.client.http.api_client import ApiClient

    if not isinstance(data, dict):
        raise InputError(f"{source}: a workflow definition is a JSON object")
    for key in ("name", "tasks"):
        if not data.get(key):
            raise InputError(f"{source}: {key} is required")
    client = ApiClient()
    model = client.deserialize_class(data, "WorkflowDef")
    lost = _lost_keys(data, client.sanitize_for_serialization(model))
    if lost:
        raise InputError(f"{source}: not fields of a Conductor workflow definition (misspelt?): {', '.join(lost)}")
    references = set()
    for i, task in enumerate(_all_tasks(data["tasks"])):
        for key in ("name", "taskReferenceName"):
            if not task.get(key):
                raise InputError(f"{source}: task #{i + 1} has no {key}")
        if task["taskReferenceName"] in references:
            raise InputError(f"{source}: taskReferenceName {task['taskReferenceName']!r} is used twice")
        references.add(task["taskReferenceName"])
    return model


def _lost_keys(original: Any, round_tripped: Any, where: str = "") -> list[str]:
    if isinstance(original, dict) and isinstance(round_tripped, dict):
        lost = []
        for key, value in original.items():
            if key not in round_tripped:
                lost.append(f"{where}{key}")
            # Values of free-form maps (inputParameters and the like) are the user's own.
            elif key not in ("inputParameters", "outputParameters", "inputTemplate", "variables", "metadata"):
                lost.extend(_lost_keys(value, round_tripped[key], f"{where}{key}."))
        return lost
    if isinstance(original, list) and isinstance(round_tripped, list):
        return [k for i, (a, b) in enumerate(zip(original, round_tripped)) for k in _lost_keys(a, b, f"{where}{i}.")]
    return []


def _all_tasks(tasks: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for task in tasks:
        yield task
        for branch in (task.get("decisionCases") or {}).values():
            yield from _all_tasks(branch)
        yield from _all_tasks(task.get("defaultCase") or [])
        for branch in task.get("forkTasks") or []:
            yield from _all_tasks(branch)
        yield from _all_tasks(task.get("loopOver") or [])


@dataclass
class TaskRun:
    reference: str
    task_type: str
    status: str
    input_data: dict[str, Any]
    output_data: dict[str, Any]
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "taskReferenceName": self.reference,
            "taskType": self.task_type,
            "status": self.status,
            "inputData": self.input_data,
            "outputData": self.output_data,
        }
        if self.reason:
            out["reasonForIncompletion"] = self.reason
        return out


@dataclass
class WorkflowRun:
    """What a local run did: status, output, and each task's input and output."""

    workflow_id: str
    name: str
    version: int | None
    status: str
    output: dict[str, Any]
    tasks: list[TaskRun]
    reason: str | None = None
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workflowId": self.workflow_id,
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "output": self.output,
        }
        if self.reason:
            out["reasonForIncompletion"] = self.reason
        out["tasks"] = [task.to_dict() for task in self.tasks]
        return out


def run_workflow(
    workflow: str | Path | Mapping[str, Any],
    workflow_input: Mapping[str, Any] | None = None,
    *,
    task_names: Iterable[str] = (),
    runtime: Runtime | None = None,
) -> WorkflowRun:
    """Run a workflow definition (a file or a dict) locally; the query tasks run for real, on
    `runtime` (the default one if none)."""
    from . import TASK_NAME

    definition = load_workflow(workflow) if isinstance(workflow, (str, Path)) else dict(workflow)
    if not isinstance(workflow, (str, Path)):
        check_workflow(definition)
    served = {TASK_NAME, *task_names}
    _check_supported(definition, served)
    workflow_id = f"local-{uuid.uuid4()}"
    context: dict[str, Any] = {
        "workflow": {
            "input": {**(definition.get("inputTemplate") or {}), **(workflow_input or {})},
            "workflowId": workflow_id,
            "workflowType": definition["name"],
            "version": definition.get("version"),
        }
    }
    runs: list[TaskRun] = []
    status, reason, error = "COMPLETED", None, None
    for task in definition["tasks"]:
        ref = task["taskReferenceName"]
        input_data = resolve(task.get("inputParameters") or {}, context)
        result = _execute(runtime, task["name"], ref, workflow_id, input_data)
        output = result.output_data or {}
        runs.append(TaskRun(ref, task["name"], result.status, input_data, output, result.reason_for_incompletion))
        context[ref] = {"input": input_data, "output": output, "status": result.status}
        if result.status != "COMPLETED":
            if task.get("optional"):
                status = "COMPLETED"
                continue
            status, reason, error = "FAILED", f"{ref}: {result.reason_for_incompletion}", output.get("error")
            break
    if status == "COMPLETED":
        output_parameters = definition.get("outputParameters")
        output = resolve(output_parameters, context) if output_parameters else (runs[-1].output_data if runs else {})
    else:
        output = {}
    return WorkflowRun(workflow_id, definition["name"], definition.get("version"), status, output, runs, reason, error)


def _execute(runtime: Runtime | None, task_type: str, ref: str, workflow_id: str, input_data: dict[str, Any]) -> Any:
    # The Conductor worker's own function, so status mapping and error output are the ones
    # a server would record.
    from conductor.client.http.models.task import Task

    from ..runtime import default
    from .conductor import run_task

    task = Task(
        task_id=f"{ref}-{uuid.uuid4().hex[:8]}",
        task_type=task_type,
        task_def_name=task_type,
        reference_task_name=ref,
        workflow_instance_id=workflow_id,
        input_data=input_data,
        status="IN_PROGRESS",
        worker_id="local",
    )
    return run_task(runtime or default(), task)


def _check_supported(definition: Mapping[str, Any], served: set[str]) -> None:
    problems = []
    earlier: set[str] = set()
    for task in definition["tasks"]:
        ref, kind = task["taskReferenceName"], task.get("type") or "SIMPLE"
        if kind != "SIMPLE":
            problems.append(f"task {ref} is a {kind} task")
        elif task["name"] not in served:
            problems.append(
                f"task {ref} is of type {task['name']!r}, which the local worker does not serve "
                f"(it serves {', '.join(sorted(served))}; --task-name {task['name']} adds it if it is a query task)"
            )
        for expression in _expressions(task.get("inputParameters")):
            problem = _unsupported_expression(expression, earlier, f"task {ref}")
            if problem:
                problems.append(problem)
        earlier.add(ref)
    for expression in _expressions(definition.get("outputParameters")):
        problem = _unsupported_expression(expression, earlier, "outputParameters")
        if problem:
            problems.append(problem)
    if problems:
        raise NotSupportedLocallyError(
            "not supported locally: "
            + "; ".join(problems)
            + ". sqladapter run executes SIMPLE query tasks in order; register the workflow with a "
            "Conductor server (sqladapter register) to run the rest"
        )


def _expressions(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield from _EXPRESSION.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _expressions(item)


def _unsupported_expression(expression: str, earlier: set[str], where: str) -> str | None:
    head, _, rest = expression.strip().partition(".")
    if head == "workflow":
        field = rest.partition(".")[0].partition("[")[0]
        if field in ("input", "workflowId", "workflowType", "version"):
            return None
        return f"{where}: ${{{expression}}} (only workflow.input, workflowId, workflowType and version are known locally)"
    if head in earlier:
        if rest.partition(".")[0].partition("[")[0] in ("input", "output", "status"):
            return None
        return f"{where}: ${{{expression}}} (a task's input, output or status only)"
    return f"{where}: ${{{expression}}} refers to {head!r}, which is not an earlier task of this workflow"


def resolve(value: Any, context: Mapping[str, Any]) -> Any:
    """Replace `${...}` expressions in a task's inputParameters (or outputParameters) from `context`."""
    if isinstance(value, dict):
        return {key: resolve(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _EXPRESSION.fullmatch(value)
    if whole:  # the whole string is one expression: the value keeps its JSON type
        return lookup(whole.group(1), context)

    def text(match: re.Match[str]) -> str:
        found = lookup(match.group(1), context)
        return found if isinstance(found, str) else json.dumps(found)

    return _EXPRESSION.sub(text, value)


def lookup(expression: str, context: Mapping[str, Any]) -> Any:
    """The value at a dotted path like `people_ref.output.rows[0].name`; None where it is missing."""
    current: Any = context
    for name, index, quoted in _PATH_TOKEN.findall(expression.strip()):
        if index:
            i = int(index)
            current = current[i] if isinstance(current, list) and i < len(current) else None
        else:
            key = quoted or name
            current = current.get(key) if isinstance(current, Mapping) else None
        if current is None:
            return None
    return current
