"""The shipped dialect plugins as the core sees them: listed, and switched off by name.

What each dialect must do with queries (read-only twice over, deadlines, rows and bytes read,
the JSON type contract, state between tasks, errors) is the conformance kit's
(`sqladapter.testing`), run by tests/test_sqlite_conformance.py and by each plugin's own tests/.
"""

from __future__ import annotations

import json

import pytest
import servers
from click.testing import CliRunner

from sqladapter import Runtime, UnknownDialectError
from sqladapter.cli import cli


def test_sqladapter_plugins_lists_the_three_dialect_plugins():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.output)}
    for name in ("duckdb", "mysql", "postgresql"):
        assert listed[name]["dialects"] == [name]
        assert listed[name]["hooks"] == ["sqladapter_register_dialects"]
        assert listed[name]["version"]


@pytest.mark.parametrize(
    ("plugin", "url", "package"),
    [
        ("duckdb", "duckdb:///numbers.duckdb", "sqladapter-duckdb"),
        ("mysql", servers.mysql_url("sqla_dialects"), "sqladapter-mysql"),
        ("postgresql", servers.postgresql_url("sqla_dialects"), "sqladapter-postgresql"),
    ],
)
def test_a_disabled_plugin_leaves_its_urls_unclaimed_with_a_hint(plugin, url, package, data_dir, monkeypatch):
    monkeypatch.setenv("SQLADAPTER_DISABLE_PLUGINS", plugin)
    scheme = url.split("://", 1)[0]
    with Runtime() as runtime:
        with pytest.raises(UnknownDialectError) as caught:
            runtime.run(connection_string=url, query="SELECT 1")
        assert all(p["dialects"] == [] for p in runtime.plugins() if p["name"] == plugin)
    message = caught.value.message
    assert f"no dialect claims '{scheme}://'" in message
    assert f"try: pip install {package}" in message
