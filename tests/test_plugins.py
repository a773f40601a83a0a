"""The plugin seam: a dialect registered through the hook from a test module, built-ins, switches."""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

from sqladapter import Dialect, Runtime, UnknownDialectError, hookimpl, plugins
from sqladapter.cli import cli
from sqladapter.default_plugins.sqlite import SQLite
from sqladapter.runtime import default


class Notes(SQLite):
    """A dialect of our own: SQLite files that end in .notes, under the notes:// scheme."""

    name = "notes"
    backends = ("notes",)
    drivername = "sqlite+pysqlite"
    extensions = (".notes",)


def _plugin_module(*dialects: Dialect) -> types.ModuleType:
    module = types.ModuleType("sqladapter_notes_test")

    @hookimpl
    def sqladapter_register_dialects(register):
        for dialect in dialects:
            register(dialect)

    module.sqladapter_register_dialects = sqladapter_register_dialects
    return module


@pytest.fixture
def with_plugin():
    """with_plugin(*dialects): a Runtime whose plugin manager also has a plugin registering them."""
    made: list[Runtime] = []

    def install(*dialects: Dialect) -> Runtime:
        pm = plugins.get_plugin_manager()
        pm.register(_plugin_module(*dialects), name="notes")
        made.append(Runtime(plugin_manager=pm))
        return made[-1]

    yield install
    for runtime in made:
        runtime.close()


def test_a_plugin_registered_through_the_hook_serves_queries(with_plugin, data_dir):
    import sqlite3

    with sqlite3.connect(data_dir / "todo.notes") as conn:
        conn.execute("CREATE TABLE todo (item TEXT)")
        conn.execute("INSERT INTO todo VALUES ('write tests')")
    runtime = with_plugin(Notes())

    by_path = runtime.run(connection_string="todo.notes", query="SELECT item FROM todo")
    by_url = runtime.run(connection_string="notes:///todo.notes", query="SELECT item FROM todo")

    assert by_path["dialect"] == by_url["dialect"] == "notes"
    assert by_path["rows"] == by_url["rows"] == [{"item": "write tests"}]


def test_two_plugins_claiming_the_same_scheme_is_an_error_naming_both(with_plugin):
    class Impostor(Notes):
        name = "impostor"
        backends = ("sqlite",)
        extensions = ()

    with pytest.raises(ValueError, match=r"'sqlite' is claimed by both plugin 'sqlite' and plugin 'notes'"):
        with_plugin(Impostor())


def test_registering_something_that_is_not_a_dialect_is_refused(with_plugin):
    with pytest.raises(TypeError, match="not a sqladapter.Dialect"):
        with_plugin(object())


def test_builtin_sqlite_goes_through_the_same_hook():
    pm = plugins.get_plugin_manager()
    assert pm.get_plugin("sqlite") is not None
    assert pm.hook.sqladapter_register_dialects.get_hookimpls()
    assert default().registry.by_backend["sqlite"].name == "sqlite"


def test_disabled_plugin_is_not_loaded_and_its_urls_say_what_to_install(monkeypatch, data_dir):
    monkeypatch.setenv("SQLADAPTER_DISABLE_PLUGINS", "duckdb, sqlite")
    with Runtime() as runtime:
        with pytest.raises(UnknownDialectError) as caught:
            runtime.run(connection_string="sqlite:///x.db", query="SELECT 1")
        assert "no dialect claims 'sqlite://'" in caught.value.message
        assert "try: pip install" in caught.value.message
        assert not caught.value.retryable
        assert "sqlite" not in runtime.registry.by_name and "duckdb" not in runtime.registry.by_name


def test_plugins_are_loaded_lazily_not_at_import():
    code = "import sys, sqladapter, sqladapter.runtime as r; print(r._default == [] and 'sqladapter_duckdb' not in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_plugins_command_lists_builtins_only_with_all():
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["plugins"]).output)
    everything = json.loads(runner.invoke(cli, ["plugins", "--all"]).output)

    assert "sqlite" not in [p["name"] for p in listed]
    sqlite = next(p for p in everything if p["name"] == "sqlite")
    assert sqlite["dialects"] == ["sqlite"]
    assert sqlite["builtin"] is True
    assert "sqladapter_register_dialects" in sqlite["hooks"]


def test_a_dialect_written_for_the_old_names_is_refused_saying_what_to_rename(with_plugin):
    class Old(Notes):
        name = "old"
        backends = ("old",)
        extensions = ()
        driver = "sqlite+pysqlite"

    with pytest.raises(TypeError, match="rename `driver` to `drivername`"):
        with_plugin(Old())
