"""Connection strings: URLs, bare paths, named connections, confinement and credentials."""

from __future__ import annotations

import os

import pytest

from sqladapter import ConnectionConfigError, UnknownDialectError, run_query
from sqladapter.runtime import default

QUERY = "SELECT name FROM people ORDER BY name LIMIT 1"


def names(output):
    return [row["name"] for row in output["rows"]]


@pytest.mark.parametrize(
    "connection_string",
    ["fake_people.db", "./fake_people.db", "sqlite:///fake_people.db", "sqlite+pysqlite:///fake_people.db"],
)
def test_bare_paths_and_urls_resolve_against_the_data_dir(people_db, connection_string):
    assert names(run_query(connection_string=connection_string, query=QUERY)) == ["Alice"]


def test_absolute_path_inside_the_data_dir_is_accepted(people_db):
    assert names(run_query(connection_string=str(people_db), query=QUERY)) == ["Alice"]
    assert names(run_query(connection_string=f"sqlite:///{people_db}", query=QUERY)) == ["Alice"]


@pytest.mark.parametrize(
    "connection_string",
    ["../fake_people.db", "sub/../../fake_people.db", "/etc/passwd.db", "sqlite:////tmp/elsewhere.db", "sqlite:///../x.db"],
)
def test_paths_outside_the_data_dir_are_refused(people_db, connection_string):
    with pytest.raises(ConnectionConfigError) as caught:
        run_query(connection_string=connection_string, query=QUERY)
    assert "outside the data directory" in caught.value.message
    assert not caught.value.retryable


def test_a_symlink_pointing_out_of_the_data_dir_is_refused(people_db, tmp_path):
    outside = tmp_path / "outside.db"
    outside.write_bytes(people_db.read_bytes())
    os.symlink(outside, people_db.parent / "link.db")
    with pytest.raises(ConnectionConfigError, match="outside the data directory"):
        run_query(connection_string="link.db", query=QUERY)


def test_a_symlink_inside_the_data_dir_is_followed(people_db):
    os.symlink(people_db, people_db.parent / "alias.db")
    assert names(run_query(connection_string="alias.db", query=QUERY)) == ["Alice"]


def test_missing_database_file_says_how_to_create_it(data_dir):
    with pytest.raises(ConnectionConfigError) as caught:
        run_query(connection_string="nothing.db", query="SELECT 1")
    assert "does not exist" in caught.value.message
    assert "sqladapter seed nothing.db" in caught.value.message


def test_inline_file_url_options_are_refused(people_db):
    with pytest.raises(ConnectionConfigError, match="after '\\?' are not accepted"):
        run_query(connection_string="sqlite:///fake_people.db?mode=rwc", query=QUERY)


def test_an_inline_password_is_refused_and_the_error_points_to_named_connections(monkeypatch):
    # Any registered server dialect would do; use the SQLite scheme so the test needs no plugin.
    with pytest.raises(ConnectionConfigError) as caught:
        run_query(connection_string="sqlite://user:hunter2@host/fake_people.db", query=QUERY)
    assert "named connection" in caught.value.message
    assert "SQLADAPTER_CONNECTION_" in caught.value.message
    assert "hunter2" not in caught.value.message


def test_inline_password_allowed_by_the_operator(monkeypatch, people_db):
    monkeypatch.setenv("SQLADAPTER_ALLOW_INLINE_CREDENTIALS", "1")
    # SQLite ignores the credentials; what matters is the policy let the URL through.
    out = run_query(connection_string="sqlite://user:hunter2@/fake_people.db", query=QUERY)
    assert names(out) == ["Alice"]


def test_named_connection_from_the_environment(monkeypatch, people_db):
    monkeypatch.setenv("SQLADAPTER_CONNECTION_PEOPLE", "fake_people.db")
    monkeypatch.setenv("SQLADAPTER_CONNECTION_MY_PEOPLE", f"sqlite:///{people_db}")
    assert names(run_query(connection="people", query=QUERY)) == ["Alice"]
    assert names(run_query(connection="my-people", query=QUERY)) == ["Alice"]


def test_named_connection_from_a_toml_file(monkeypatch, people_db, tmp_path):
    config = tmp_path / "connections.toml"
    config.write_text(f'[connections]\nreporting = "sqlite:///{people_db}"\n')
    monkeypatch.setenv("SQLADAPTER_CONNECTIONS_FILE", str(config))
    assert names(run_query(connection="reporting", query=QUERY)) == ["Alice"]


def test_unknown_named_connection_says_which_variable_to_set(data_dir):
    with pytest.raises(ConnectionConfigError) as caught:
        run_query(connection="billing", query=QUERY)
    assert "SQLADAPTER_CONNECTION_BILLING" in caught.value.message


@pytest.mark.parametrize("name", ["../etc", "a b", "", "x" * 65])
def test_connection_names_are_plain_words(data_dir, name):
    with pytest.raises(ConnectionConfigError):
        run_query(connection=name, query=QUERY)


def test_exactly_one_of_connection_string_or_connection(people_db, monkeypatch):
    monkeypatch.setenv("SQLADAPTER_CONNECTION_PEOPLE", "fake_people.db")
    with pytest.raises(ConnectionConfigError, match="exactly one"):
        run_query(connection_string="fake_people.db", connection="people", query=QUERY)
    with pytest.raises(ConnectionConfigError, match="exactly one"):
        run_query(query=QUERY)


def test_unknown_scheme_names_installed_dialects_and_the_package(data_dir):
    with pytest.raises(UnknownDialectError) as caught:
        run_query(connection_string="mssql://db.example/sales", query=QUERY)
    message = caught.value.message
    assert "no dialect claims 'mssql://'" in message
    assert "sqlite" in message
    assert "pip install sqladapter-mssql" in message


def test_unknown_file_extension_is_refused(data_dir):
    (data_dir / "people.csv").write_text("a\n1\n")
    with pytest.raises(UnknownDialectError, match="by its extension"):
        run_query(connection_string="people.csv", query="SELECT 1")


def test_engines_are_created_once_per_connection_and_reused(people_db):
    first = default().resolve("fake_people.db")
    second = default().resolve("sqlite:///fake_people.db")
    assert first.engine is second.engine
    run_query(connection_string="fake_people.db", query=QUERY)
    run_query(connection_string="fake_people.db", query=QUERY)
    pool = first.engine.pool
    # One connection, used twice: kept by this thread for its next query, or back in the pool.
    assert pool.checkedin() + pool.checkedout() == 1
