"""`sqladapter run`: workflow definitions run locally against real SQLite files."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sqladapter.cli import cli
from sqladapter.engines.conductor_local import NotSupportedLocallyError, run_workflow, substitute

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
TUTORIAL = WORKFLOWS / "tutorial"


def people() -> list[dict[str, str]]:
    with open(ROOT / "fixtures" / "people.csv", newline="") as f:
        return list(csv.DictReader(f))


def run_cli(*args: str) -> tuple[int, dict | None, str]:
    result = CliRunner().invoke(cli, ["run", *args])
    try:
        output = json.loads(result.stdout)
    except ValueError:
        output = None
    return result.exit_code, output, result.stderr


def simple_task(ref: str, inputs: dict, **extra) -> dict:
    return {"name": "query_sql", "taskReferenceName": ref, "type": "SIMPLE", "inputParameters": inputs, **extra}


def test_tutorial_workflow_file_unchanged_returns_the_five_people(tmp_path):
    """simple_worker_2.json as published, against fake_people.db made by `sqladapter seed`."""
    subprocess.run([sys.executable, "-m", "sqladapter", "seed"], cwd=tmp_path, check=True, capture_output=True,
                   env={"SQLADAPTER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    workflow = tmp_path / "simple_worker_2.json"
    shutil.copy(TUTORIAL / "simple_worker_2.json", workflow)
    result = subprocess.run(
        [sys.executable, "-m", "sqladapter", "run", str(workflow), "--task-name", "query_sqlite"],
        cwd=tmp_path, capture_output=True, text=True, env={"SQLADAPTER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["status"] == "COMPLETED"
    assert output["output"]["rows"] == people()  # no outputParameters: the last task's output
    assert workflow.read_bytes() == (TUTORIAL / "simple_worker_2.json").read_bytes()


def test_zip_code_workflow_binds_the_workflow_input(people_db):
    code, output, _ = run_cli(str(WORKFLOWS / "people_by_zip.json"), "--input", '{"zip": "12345"}')
    assert code == 0
    assert output["output"] == {
        "people": [{"name": "John", "surname": "Doe", "birth_date": "1990-01-01", "zip_code": "12345"}],
        "count": 1,
    }
    assert output["tasks"][0]["inputData"]["parameters"] == {"zip": "12345"}


def test_chained_workflow_binds_a_value_from_the_first_tasks_rows(people_db):
    run = run_workflow(WORKFLOWS / "people_born_before.json", {"name": "Bob", "surname": "Johnson"})
    assert run.status == "COMPLETED"
    assert run.tasks[1].input_data["parameters"] == {"born": "1992-03-20"}
    assert run.output["person"] == {"name": "Bob", "surname": "Johnson", "birth_date": "1992-03-20"}
    assert [p["name"] for p in run.output["bornBefore"]] == ["Jane", "Alice", "John"]


def test_other_task_types_are_refused_before_anything_runs(people_db):
    workflow = {
        "name": "mixed",
        "tasks": [
            simple_task("first_ref", {"connection_string": "fake_people.db", "query": "SELECT 1"}),
            {"name": "route", "taskReferenceName": "route_ref", "type": "SWITCH", "evaluatorType": "value-param",
             "expression": "x", "inputParameters": {"x": "${first_ref.output.rowCount}"}, "decisionCases": {}},
        ],
    }
    with pytest.raises(NotSupportedLocallyError, match="route_ref is a SWITCH task") as raised:
        run_workflow(workflow)
    assert raised.value.retryable is False


def test_unserved_task_name_says_how_to_serve_it(tmp_path):
    code, _, stderr = run_cli(str(TUTORIAL / "simple_worker_2.json"))
    assert code == 2
    assert "not supported locally" in stderr and "--task-name query_sqlite" in stderr


def test_expressions_only_refer_to_earlier_tasks(people_db):
    workflow = {"name": "w", "tasks": [simple_task("a_ref", {"connection_string": "fake_people.db",
                                                             "query": "SELECT :v AS v", "parameters": {"v": "${b_ref.output.rows[0].v}"}}),
                                       simple_task("b_ref", {"connection_string": "fake_people.db", "query": "SELECT 1 AS v"})]}
    with pytest.raises(NotSupportedLocallyError, match="refers to 'b_ref', which is not an earlier task"):
        run_workflow(workflow)


def test_failed_task_fails_the_workflow_with_its_error(people_db):
    workflow = {"name": "w", "tasks": [
        simple_task("bad_ref", {"connection_string": "fake_people.db", "query": "SELECT nope FROM people"}),
        simple_task("never_ref", {"connection_string": "fake_people.db", "query": "SELECT 1"}),
    ]}
    path = people_db.parent / "w.json"
    path.write_text(json.dumps(workflow))
    code, output, stderr = run_cli(str(path))
    assert code == 2
    assert output["status"] == "FAILED"
    assert [t["taskReferenceName"] for t in output["tasks"]] == ["bad_ref"]
    assert output["tasks"][0]["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert output["tasks"][0]["outputData"]["error"]["type"] == "query_error"
    assert "bad_ref" in stderr


def test_optional_task_failure_does_not_stop_the_workflow(people_db):
    workflow = {"name": "w", "tasks": [
        simple_task("bad_ref", {"connection_string": "fake_people.db", "query": "SELECT nope FROM people"}, optional=True),
        simple_task("next_ref", {"connection_string": "fake_people.db", "query": "SELECT 1 AS one"}),
    ]}
    run = run_workflow(workflow)
    assert run.status == "COMPLETED" and run.output["rows"] == [{"one": 1}]


def test_input_template_gives_defaults_the_input_overrides(people_db):
    workflow = {
        "name": "w",
        "inputTemplate": {"zip": "67890", "limit": 5},
        "tasks": [simple_task("p_ref", {"connection_string": "fake_people.db", "max_rows": "${workflow.input.limit}",
                                        "query": "SELECT name FROM people WHERE zip_code = :zip",
                                        "parameters": {"zip": "${workflow.input.zip}"}})],
        "outputParameters": {"first": "${p_ref.output.rows[0].name}"},
    }
    assert run_workflow(workflow).output == {"first": "Jane"}
    assert run_workflow(workflow, {"zip": "11111"}).output == {"first": "Bob"}


def test_resolve_keeps_json_types_and_interpolates_inside_text():
    context = {"workflow": {"input": {"n": 3, "tags": ["a"]}}, "t_ref": {"output": {"rows": [{"name": "Jo"}]}}}
    assert substitute({"n": "${workflow.input.n}", "tags": "${workflow.input.tags}"}, context) == {"n": 3, "tags": ["a"]}
    assert substitute("hi ${t_ref.output.rows[0].name} x${workflow.input.n}", context) == "hi Jo x3"
    assert substitute(["${t_ref.output.rows[5].name}", "${workflow.input.missing}"], context) == [None, None]


def test_input_must_be_a_json_object(people_db):
    code, _, stderr = run_cli(str(WORKFLOWS / "people_by_zip.json"), "--input", "[1]")
    assert code == 2 and "JSON object" in stderr
