"""Shared fixtures: a data directory per test, fresh plugin state, and the database servers.

MariaDB and PostgreSQL tests run against real servers (127.0.0.1:3306 root, 127.0.0.1:5432
trust). Where a server does not answer they skip with a one-line reason, unless
SQLADAPTER_REQUIRE_SERVERS=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sqladapter import connections, plugins
from sqladapter.seed import seed

REQUIRE_SERVERS = os.environ.get("SQLADAPTER_REQUIRE_SERVERS") == "1"


def server_unavailable(reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI) a test whose server does not answer."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (SQLADAPTER_REQUIRE_SERVERS=1 turns this skip into a failure)")
    pytest.skip(reason)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory, set as SQLADAPTER_DATA_DIR."""
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv("SQLADAPTER_DATA_DIR", str(directory))
    return directory


@pytest.fixture
def people_db(data_dir: Path) -> Path:
    """fake_people.db in the data directory, seeded with the tutorial's five people."""
    seed("fake_people.db")
    return data_dir / "fake_people.db"


@pytest.fixture(autouse=True)
def _isolated_plugins(monkeypatch: pytest.MonkeyPatch):
    """Every test starts from the installed plugins, whatever an earlier test registered."""
    monkeypatch.delenv("SQLADAPTER_DISABLE_PLUGINS", raising=False)
    yield
    if plugins._registry is not None and plugins._registry.pm is not None and getattr(plugins._registry, "_custom", False):
        plugins.reset()
    connections.dispose_engines()
