"""The `sqladapter` command as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

import sqladapter
from sqladapter.cli import cli

ZIP_QUERY = "SELECT * FROM people WHERE zip_code = :zip"


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_query_with_a_named_parameter_prints_the_output_json(people_db):
    result = run("query", "fake_people.db", ZIP_QUERY, "-p", "zip=12345")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["rows"] == [{"name": "John", "surname": "Doe", "birth_date": "1990-01-01", "zip_code": "12345"}]


def test_query_with_positional_parameters_and_options(people_db):
    result = run(
        "query", "fake_people.db", "SELECT name FROM people WHERE zip_code IN (?, ?) ORDER BY name",
        "--params", '["12345", "67890"]', "--shape", "arrays", "--max-rows", "1",
    )
    out = json.loads(result.output)
    assert out["rows"] == [["Jane"]] and out["truncated"] is True


def test_query_on_a_named_connection(people_db, monkeypatch):
    monkeypatch.setenv("SQLADAPTER_CONNECTION_PEOPLE", "fake_people.db")
    result = run("query", "@people", "SELECT COUNT(*) FROM people", "--fetch", "value")
    assert json.loads(result.output)["value"] == 5


def test_a_terminal_error_exits_2_with_the_message(people_db):
    result = run("query", "fake_people.db", "DELETE FROM people")
    assert result.exit_code == 2
    assert "not_read_only" in result.output and "terminal" in result.output


def test_a_retryable_error_exits_3(people_db):
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    result = run("query", "fake_people.db", runaway, "--timeout-ms", "100")
    assert result.exit_code == 3
    assert "timeout" in result.output and "retryable" in result.output


def test_bad_params_json_is_a_usage_error(people_db):
    result = run("query", "fake_people.db", ZIP_QUERY, "--params", "{zip: 1}")
    assert result.exit_code == 2 and "not JSON" in result.output


def test_version():
    result = subprocess.run([sys.executable, "-m", "sqladapter", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert sqladapter.__version__ in result.stdout


def test_the_installed_command_prints_the_distributions_version():
    command = Path(sys.executable).with_name("sqladapter")
    result = subprocess.run([str(command), "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sqladapter, version {version('sqladapter')}"


# SQLAlchemy and sqlglot take hundreds of milliseconds to import: a user's first `--help` must not wait for them.
LOADED = "print('sqlalchemy' in sys.modules, 'sqlglot' in sys.modules)"
RUN_CLI = "import sys\nfrom sqladapter.cli import main\nsys.argv[1:] = {!r}\ntry:\n    main()\nexcept SystemExit:\n    pass\n" + LOADED


@pytest.mark.parametrize(
    "code",
    [
        "import sqladapter.cli, sys; " + LOADED,
        "import sys; from sqladapter.errors import SqlAdapterError; " + LOADED,
        RUN_CLI.format(["--help"]),
        RUN_CLI.format(["--version"]),
        RUN_CLI.format(["worker", "--help"]),
    ],
    ids=["import cli", "import errors", "--help", "--version", "worker --help"],
)
def test_help_and_version_do_not_import_the_database_stack(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False", result.stdout


def test_the_package_still_exports_what_users_and_plugins_import():
    from sqladapter import Dialect, Runtime, SqlAdapterError, dialect, hookimpl, run_query, runtime

    assert run_query is runtime.run_query and Dialect is dialect.Dialect and Runtime is runtime.Runtime
    assert callable(hookimpl) and issubclass(SqlAdapterError, Exception)
    assert {"run_query", "Dialect", "__version__"} <= set(dir(sqladapter)) and set(sqladapter.__all__) <= set(dir(sqladapter))
