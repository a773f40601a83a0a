"""The conformance kit catches an unsafe plugin.

A toy plugin, `sqladapter-toysqlite` (SQLite under the URL scheme toysqlite://), is written to a
temporary folder as a distribution of its own, with its own tests running the kit, installed
with pip into a folder of its own (the project's environment is left as it was), and its tests
run in a new interpreter that finds it there. Three variants of the one plugin, chosen by
TOYSQLITE_VARIANT when it registers its dialect:

- `correct`: SQLite as it is: every check of the kit passes;
- `no-read-only`: its engines open the file read-write, without SQLite's authorizer: the kit
  reports the database-level read-only layer missing;
- `no-deadline`: its time limit does nothing: the kit reports no deadline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PYPROJECT = """\
[build-system]
# A backend of its own, in the source tree: the toy builds with nothing but the standard library.
requires = []
build-backend = "toy_build"
backend-path = ["."]

[project]
name = "sqladapter-toysqlite"
version = "0.1.0"
description = "A toy sqladapter dialect plugin: SQLite as toysqlite://, in three variants"
requires-python = ">=3.11"
dependencies = ["sqladapter"]

[project.entry-points.sqladapter]
toysqlite = "sqladapter_toysqlite"
"""

# The least of PEP 517 pip needs to install a one-module distribution: a wheel holding the
# module, its metadata and its entry points.
BACKEND = '''\
import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path


def _project():
    return tomllib.loads(Path("pyproject.toml").read_text())["project"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = _project()
    name, version = project["name"].replace("-", "_"), project["version"]
    info = f"{name}-{version}.dist-info"
    points = "".join(
        f"[{group}]\\n" + "".join(f"{key} = {value}\\n" for key, value in entries.items())
        for group, entries in project.get("entry-points", {}).items()
    )
    files = {
        "sqladapter_toysqlite.py": Path("sqladapter_toysqlite.py").read_bytes(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {version}\\n"
            + "".join(f"Requires-Dist: {d}\\n" for d in project.get("dependencies", []))
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: toy_build\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        f"{info}/entry_points.txt": points.encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel
'''

MODULE = '''\
"""SQLite under the URL scheme toysqlite://, as TOYSQLITE_VARIANT says (correct, no-read-only, no-deadline)."""

import contextlib
import os

from sqladapter import hookimpl
from sqladapter.default_plugins.sqlite import SQLite


class ToySQLite(SQLite):
    name = "toysqlite"
    backends = ("toysqlite",)
    extensions = (".toy",)


class NoReadOnly(ToySQLite):
    """Opens the file read-write, without the authorizer: only the guard refuses writes."""

    def engine_options(self, url, *, read_only):
        return super().engine_options(url, read_only=False)


class NoDeadline(ToySQLite):
    """Its time limit does nothing: a query runs as long as it takes."""

    def time_limit(self, connection, limits):
        return contextlib.nullcontext()


VARIANTS = {"correct": ToySQLite, "no-read-only": NoReadOnly, "no-deadline": NoDeadline}


@hookimpl
def sqladapter_register_dialects(register):
    register(VARIANTS[os.environ.get("TOYSQLITE_VARIANT", "correct")]())
'''

TESTS = '''\
"""The toy plugin's own tests: sqladapter's conformance kit, on a file in a temporary folder."""

import sqlite3

import pytest

from sqladapter.testing import Database, DialectSuite


class TestToySQLite(DialectSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def database(cls, tmp_path_factory):
        data_dir = tmp_path_factory.mktemp("toy")
        path = data_dir / "kit.toy"
        sqlite3.connect(path).close()
        yield Database(
            dialect="toysqlite",
            connection_string="toysqlite:///kit.toy",
            raw_connect=lambda: sqlite3.connect(path, isolation_level=None),
            data_dir=data_dir,
            hostile_tags=["common", "sqlite"],
            probe="SELECT (SELECT count(*) FROM people) AS n, (SELECT count(*) FROM pragma_database_list) AS dbs, "
            "(SELECT count(*) FROM sqlite_temp_master) AS temps",
            state_changes=["CREATE TEMP TABLE kit_temp (i INTEGER)", "ATTACH DATABASE ':memory:' AS kit_other"],
            # About 3 s of work, so that without a deadline it ends by itself.
            slow_query="WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT count(*) FROM c",
            unstoppable_query="SELECT printf('%.*c', 1900000, 'x') LIKE ('%' || printf('%.*c', 490, 'x') || 'y%') AS v",
            types={"null": "NULL", "integer": "42", "big integer": "9007199254740993", "float": "1.5", "text": "'héllo'", "bytes": "x'00ff'"},
        )
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """The toy plugin's source folder, pip-installed into a folder of its own."""
    root = tmp_path_factory.mktemp("toysqlite")
    source = root / "sqladapter-toysqlite"
    (source / "tests").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "toy_build.py").write_text(BACKEND)
    (source / "sqladapter_toysqlite.py").write_text(MODULE)
    (source / "tests" / "test_toysqlite_conformance.py").write_text(TESTS)
    (source / "pytest.ini").write_text("[pytest]\n")
    site = root / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (site / "sqladapter_toysqlite.py").exists()
    assert list(site.glob("sqladapter_toysqlite-0.1.0.dist-info/entry_points.txt")), sorted(p.name for p in site.iterdir())
    return {"source": source, "site": site}


# The unsafe variants leave out checks that take long and bear on neither missing layer: bad
# input, and (without a deadline, where its runaway statement is waited for) the hostile corpus.
LEFT_OUT = {
    "correct": [],
    "no-read-only": ["test_bad_input_is_terminal_never_internal"],
    "no-deadline": ["test_bad_input_is_terminal_never_internal", "test_hostile_statements_are_refused_and_change_nothing"],
}


def _run_kit(toy: dict[str, Path], variant: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQLADAPTER_", "PYTEST_"))}
    env.update({"PYTHONPATH": str(toy["site"]), "TOYSQLITE_VARIANT": variant, "PYTHONDONTWRITEBYTECODE": "1"})
    source = toy["source"]
    tests = source / "tests" / "test_toysqlite_conformance.py"
    # Node ids are relative to the rootdir, the toy's source folder.
    deselect = [f"--deselect=tests/{tests.name}::TestToySQLite::{name}" for name in LEFT_OUT[variant]]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "--rootdir", str(source),
         "-c", str(source / "pytest.ini"), *deselect, str(tests)],
        cwd=source, env=env, capture_output=True, text=True, timeout=600,
    )


def _failed(run: subprocess.CompletedProcess[str]) -> set[str]:
    return set(re.findall(r"^FAILED \S+::TestToySQLite::(\w+)", run.stdout, re.MULTILINE))


def _summary(run: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else run.stderr[-2000:]


VARIANTS = ("correct", "no-read-only", "no-deadline")


@pytest.fixture(scope="module")
def runs(toy) -> dict[str, subprocess.CompletedProcess[str]]:
    """The kit run against each variant: the correct one alone (its time limits are measured),
    then the two unsafe ones side by side (what they fail on does not depend on timing)."""
    results = {"correct": _run_kit(toy, "correct")}
    unsafe = VARIANTS[1:]
    with ThreadPoolExecutor(len(unsafe)) as pool:
        results.update(zip(unsafe, pool.map(lambda variant: _run_kit(toy, variant), unsafe)))
    return results


def test_the_correct_plugin_passes_every_check(runs):
    run = runs["correct"]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    passed = int(re.search(r"(\d+) passed", _summary(run)).group(1))
    assert passed >= 15, _summary(run)
    assert "failed" not in _summary(run)


def test_a_plugin_without_the_database_read_only_layer_fails_naming_it(runs):
    run = runs["no-read-only"]
    assert run.returncode == 1, run.stdout[-6000:] + run.stderr[-3000:]
    assert "test_the_database_refuses_writes_when_the_guard_is_bypassed" in _failed(run), run.stdout[-6000:]
    assert "the database-level read-only layer is missing: an INSERT with the guard bypassed changed the table" in run.stdout
    assert "the database-level read-only layer is missing: an INSERT with the guard bypassed was accepted by the database" in run.stdout
    # The guard still refuses on its own, and the time limit still holds.
    assert not _failed(run) & {
        "test_the_guard_refuses_writes_when_the_database_layer_is_bypassed",
        "test_hostile_statements_are_refused_and_change_nothing",
        "test_a_slow_query_stops_at_its_time_limit",
    }, _failed(run)
    assert "deselected" in _summary(run)


def test_a_plugin_without_a_deadline_fails_naming_it(runs):
    run = runs["no-deadline"]
    assert run.returncode == 1, run.stdout[-6000:] + run.stderr[-3000:]
    failed = _failed(run)
    assert {
        "test_a_slow_query_stops_at_its_time_limit",
        "test_a_time_limit_that_ends_before_the_query_starts_still_stops_it",
        "test_a_query_the_database_does_not_stop_still_reports_on_time",
    } <= failed, run.stdout[-6000:]
    assert re.search(r"no deadline: the query ran \d+\.\d s past timeout_ms=500", run.stdout), run.stdout[-6000:]
    assert re.search(r"no deadline: a query with timeout_ms=1 was still running \d+\.\d s after it started", run.stdout)
    # The read-only layers are untouched.
    assert not failed & {
        "test_the_database_refuses_writes_when_the_guard_is_bypassed",
        "test_the_guard_refuses_writes_when_the_database_layer_is_bypassed",
    }, failed


def test_the_toy_plugin_never_entered_this_environment(toy):
    from importlib.metadata import distributions

    assert "sqladapter-toysqlite" not in {dist.metadata["Name"] for dist in distributions()}
    assert textwrap.dedent(MODULE).startswith('"""SQLite under')
