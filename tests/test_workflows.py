"""workflows/: each file is a Conductor workflow definition a user can register as it is, each runs,
and `sqladapter register` puts them (and the task definition) on a server, idempotently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import servers
from click.testing import CliRunner
from conductor_server import ConductorServer

from sqladapter.cli import cli
from sqladapter.engines.conductor_local import check_workflow, load_workflow, run_workflow, workflow_files
from sqladapter.errors import InputError, UnknownDialectError
from sqladapter.runtime import default
from sqladapter.seed import seed

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "workflows" / "tutorial"
SERVER_URLS = {
    "mysql": servers.mysql_url("sqla_worker"),
    "postgresql": servers.postgresql_url("sqla_worker"),
}
JOHN_DOE = [{"name": "John", "surname": "Doe", "birth_date": "1990-01-01", "zip_code": "12345"}]


def test_the_shipped_workflows_are_the_ones_in_the_source_tree():
    names = [path.name for path in workflow_files()]
    assert names == sorted(p.name for p in (ROOT / "workflows").glob("*.json"))
    assert {"people_by_zip.json", "people_born_before.json", "people_by_zip_duckdb.json",
            "people_by_zip_mysql.json", "people_by_zip_postgresql.json"} <= set(names)


@pytest.mark.parametrize("path", workflow_files() + [TUTORIAL / "simple_worker.json", TUTORIAL / "simple_worker_2.json"],
                         ids=lambda p: p.name)
def test_every_workflow_round_trips_through_conductors_workflowdef(path):
    data = json.loads(path.read_text())
    model = check_workflow(data, source=path.name)
    assert type(model).__name__ == "WorkflowDef"
    assert model.name == data["name"]
    assert [t.task_reference_name for t in model.tasks] == [t["taskReferenceName"] for t in data["tasks"]]


def test_the_tutorial_workflow_is_kept_as_published():
    """Users registered simple_worker_2.json as it is: its task name and inputs are what the worker must serve."""
    data = json.loads((TUTORIAL / "simple_worker_2.json").read_text())
    assert (data["name"], data["version"]) == ("simple_worker", 2)
    [task] = data["tasks"]
    assert (task["name"], task["taskReferenceName"], task["type"]) == ("query_sqlite", "query_sqlite_ref", "SIMPLE")
    assert task["inputParameters"] == {"connection_string": "fake_people.db", "query": "Select * from people"}
    assert (TUTORIAL / "simple_worker_2.json").read_bytes().endswith(b"}")  # as published: no newline at the end
    assert "tutorial" not in {path.parent.name for path in workflow_files()}  # not registered by default


def test_a_misspelt_key_is_refused_instead_of_silently_dropped():
    data = json.loads((ROOT / "workflows" / "people_by_zip.json").read_text())
    data["tasks"][0]["inputParamters"] = data["tasks"][0].pop("inputParameters")
    with pytest.raises(InputError, match="tasks.0.inputParamters"):
        check_workflow(data)


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_shipped_workflows_use_only_query_sql_tasks_fed_from_the_workflow_input(path):
    data = load_workflow(path)
    for task in data["tasks"]:
        assert (task["name"], task["type"]) == ("query_sql", "SIMPLE")
        assert "${workflow.input." in json.dumps(task["inputParameters"]) or "_ref.output." in json.dumps(task["inputParameters"])


def _require_dialect(name: str) -> None:
    try:
        default().registry.for_backend(name)
    except UnknownDialectError:
        pytest.skip(f"the {name} dialect is not installed: pip install -e plugins/sqladapter-{name}")


def _create_server_database(dialect: str) -> None:
    from servers import server_unavailable

    if dialect == "mysql":
        import pymysql

        try:
            conn = pymysql.connect(host=servers.MYSQL_ADDRESS, port=servers.MYSQL_PORT, user="root", password="", connect_timeout=5)
        except pymysql.err.OperationalError as exc:
            server_unavailable(f"MariaDB on {servers.MYSQL_HOST} does not answer: {exc}")
        with conn, conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE IF NOT EXISTS sqla_worker")
    else:
        import psycopg

        try:
            admin = psycopg.connect(
                host=servers.POSTGRESQL_ADDRESS, port=servers.POSTGRESQL_PORT, user="postgres", dbname="postgres",
                autocommit=True, connect_timeout=5,
            )
        except psycopg.OperationalError as exc:
            server_unavailable(f"PostgreSQL on {servers.POSTGRESQL_HOST} does not answer: {exc}")
        with admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = 'sqla_worker'").fetchone() is None:
                admin.execute("CREATE DATABASE sqla_worker")


@pytest.mark.parametrize(
    "dialect", ["duckdb", pytest.param("mysql", marks=pytest.mark.servers), pytest.param("postgresql", marks=pytest.mark.servers)]
)
def test_each_dialect_workflow_runs_through_its_named_connection(dialect, data_dir, monkeypatch):
    _require_dialect(dialect)
    if dialect == "duckdb":
        url = "people.duckdb"
    else:
        _create_server_database(dialect)
        url = SERVER_URLS[dialect]
    monkeypatch.setenv(f"SQLADAPTER_CONNECTION_PEOPLE_{dialect.upper()}", url)
    seed(connection=f"people_{dialect}", force=True)
    run = run_workflow(ROOT / "workflows" / f"people_by_zip_{dialect}.json", {"zip": "12345"})
    assert run.status == "COMPLETED", run.to_dict()
    assert run.output == {"people": JOHN_DOE, "count": 1}
    assert run.tasks[0].output_data["dialect"] == dialect


def test_register_puts_task_and_workflow_definitions_on_the_server_idempotently(monkeypatch):
    with ConductorServer("/api") as server:
        monkeypatch.setenv("CONDUCTOR_SERVER_URL", server.url)
        first = CliRunner().invoke(cli, ["register", "--task-name", "query_sqlite"])
        assert first.exit_code == 0, first.output
        snapshot = (json.dumps(server.task_defs, sort_keys=True), json.dumps(sorted(server.workflow_defs.items()), sort_keys=True))
        second = CliRunner().invoke(cli, ["register", "--task-name", "query_sqlite"])
        assert second.exit_code == 0, second.output
        assert second.output == first.output
        assert (json.dumps(server.task_defs, sort_keys=True), json.dumps(sorted(server.workflow_defs.items()), sort_keys=True)) == snapshot

    assert set(server.task_defs) == {"query_sql", "query_sqlite"}
    task_def = server.task_defs["query_sql"]
    assert task_def["retryCount"] >= 1 and task_def["retryLogic"] in ("FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF")
    assert task_def["responseTimeoutSeconds"] > 300  # longer than the longest query the worker allows
    assert task_def["timeoutSeconds"] >= task_def["responseTimeoutSeconds"]
    assert task_def["ownerEmail"]
    shipped = {load_workflow(p)["name"]: load_workflow(p) for p in workflow_files()}
    assert {name for name, _ in server.workflow_defs} == set(shipped)
    for (name, version), registered in server.workflow_defs.items():
        assert registered["tasks"] == shipped[name]["tasks"] and registered["ownerEmail"]


def test_register_says_when_the_server_is_unreachable(monkeypatch):
    with ConductorServer("/api") as server:
        url = server.url
    monkeypatch.setenv("CONDUCTOR_SERVER_URL", url)
    result = CliRunner().invoke(cli, ["register"])
    assert result.exit_code != 0
    assert f"cannot reach the Conductor server at {url}" in result.output


WRITES = ROOT / "workflows" / "writes"


@pytest.fixture
def shop(data_dir, monkeypatch):
    from sqladapter import ledger
    from sqladapter.runtime import Runtime

    monkeypatch.setenv("SQLADAPTER_CONNECTION_SHOP", str(data_dir / "shop.db"))
    monkeypatch.setenv("SQLADAPTER_CONNECTION_SHOP_WRITABLE", "1")
    with Runtime() as runtime:
        seed(connection="shop", dataset="all", runtime=runtime)
        ledger.init(runtime, "shop")
    return data_dir / "shop.db"


@pytest.mark.parametrize("path", sorted(WRITES.glob("*.json")), ids=lambda p: p.name)
def test_the_write_examples_round_trip_and_are_not_registered_by_default(path):
    assert type(check_workflow(json.loads(path.read_text()), source=path.name)).__name__ == "WorkflowDef"
    assert path not in workflow_files()


def test_the_ship_order_example_reads_then_updates_exactly_one_row(shop):
    import sqlite3

    conn = sqlite3.connect(shop)
    with conn:
        paid = conn.execute("SELECT id FROM orders WHERE status = 'paid' ORDER BY id LIMIT 1").fetchone()[0]
    run = run_workflow(WRITES / "ship_order.json", {"order_id": paid}, task_names=["execute_sql"])
    assert run.status == "COMPLETED", run.to_dict()
    assert run.output["shipped"] == 1 and run.output["replayed"] is False and run.output["order"]["status"] == "paid"
    assert conn.execute("SELECT status FROM orders WHERE id = ?", (paid,)).fetchone() == ("shipped",)
    # Run again: the order is no longer paid, so the expected count fails the write and nothing changes.
    again = run_workflow(WRITES / "ship_order.json", {"order_id": paid}, task_names=["execute_sql"])
    assert again.status == "FAILED" and again.error["type"] == "unexpected_row_count"
    conn.close()


def test_the_import_people_example_inserts_a_batch(shop):
    people = [{"name": f"N{i}", "surname": "Batch", "birth_date": "2000-01-01", "zip_code": "99999"} for i in range(500)]
    run = run_workflow(WRITES / "import_people.json", {"people": people}, task_names=["execute_sql"])
    assert run.status == "COMPLETED", run.to_dict()
    assert run.output == {"inserted": 500, "people": 505}
