"""run_query on SQLite: parameters, limits, fetch modes, the read-only layers, time limits, errors."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from sqladapter import (
    DatabaseUnavailableError,
    InputError,
    LockTimeoutError,
    NotReadOnlyError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    run_query,
)
from sqladapter.runtime import close_default

DB = "fake_people.db"


def q(query, **fields):
    return run_query(connection_string=DB, query=query, **fields)


@pytest.fixture
def numbers_db(data_dir):
    """numbers.db with n = 1..10."""
    with sqlite3.connect(data_dir / "numbers.db") as conn:
        conn.execute("CREATE TABLE numbers (n INTEGER)")
        conn.executemany("INSERT INTO numbers VALUES (?)", [(i,) for i in range(1, 11)])
    return data_dir / "numbers.db"


# -- parameters ----------------------------------------------------------------------------


def test_the_tutorial_query_with_a_named_parameter(people_db):
    out = q("SELECT * FROM people WHERE zip_code = :zip", parameters={"zip": "12345"})
    assert out["rows"] == [{"name": "John", "surname": "Doe", "birth_date": "1990-01-01", "zip_code": "12345"}]
    assert out["columns"][0] == {"name": "name", "type": "TEXT"}
    assert out["rowCount"] == 1 and out["truncated"] is False and out["dialect"] == "sqlite"
    assert out["elapsedMs"] >= 0


def test_positional_parameters(people_db):
    out = q("SELECT name FROM people WHERE zip_code IN (?, ?) ORDER BY name", parameters=["12345", "67890"])
    assert [r["name"] for r in out["rows"]] == ["Jane", "John"]


def test_a_named_parameter_used_twice(people_db):
    out = q("SELECT :v AS a, :v AS b", parameters={"v": 7})
    assert out["rows"] == [{"a": 7, "b": 7}]


def test_parameter_values_are_bound_never_spliced(people_db):
    hostile = "12345' OR '1'='1"
    out = q("SELECT name FROM people WHERE zip_code = :zip", parameters={"zip": hostile})
    assert out["rows"] == []
    echoed = q("SELECT :s AS s", parameters={"s": "'; DROP TABLE people; --"})
    assert echoed["rows"] == [{"s": "'; DROP TABLE people; --"}]
    assert q("SELECT COUNT(*) AS n FROM people")["rows"] == [{"n": 5}]


def test_placeholder_lookalikes_in_strings_and_comments_are_text(people_db):
    out = q("SELECT ':zip' AS a, '?' AS b, name FROM people /* :nope ? */ WHERE zip_code = :zip -- ?", parameters={"zip": "12345"})
    assert out["rows"] == [{"a": ":zip", "b": "?", "name": "John"}]


@pytest.mark.parametrize(
    "query, parameters, message",
    [
        ("SELECT :zip", None, "missing parameter(s): zip"),
        ("SELECT :zip, :other", {"zip": 1}, "missing parameter(s): other"),
        ("SELECT :zip", {"zip": 1, "extra": 2}, "unused parameter(s): extra"),
        ("SELECT 1", {"extra": 2}, "unused parameter(s): extra"),
        ("SELECT ?, ?", [1], "2 ? placeholder(s) but 1 parameter(s)"),
        ("SELECT ?", {"a": 1}, "pass parameters as a list"),
        ("SELECT :a", [1], "pass parameters as an object"),
        ("SELECT :a, ?", {"a": 1}, "mixes :name and ? placeholders"),
        ("SELECT :a", {"a": [1, 2]}, "values must be JSON scalars"),
        ("SELECT :a", {"a": {"b": 1}}, "values must be JSON scalars"),
    ],
)
def test_bad_binds_are_terminal_errors_that_name_them(people_db, query, parameters, message):
    with pytest.raises(InputError) as caught:
        q(query, parameters=parameters)
    assert message in caught.value.message
    assert caught.value.retryable is False


# -- input validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"query": ""}, "query is required"),
        ({"query": 5}, "query is required"),
        ({"query": "SELECT 1", "max_rows": 0}, "max_rows must be a positive integer"),
        ({"query": "SELECT 1", "max_rows": True}, "max_rows must be a positive integer"),
        ({"query": "SELECT 1", "timeout_ms": -1}, "timeout_ms must be a positive integer"),
        ({"query": "SELECT 1", "shape": "table"}, "shape must be one of"),
        ({"query": "SELECT 1", "fetch": "all"}, "fetch must be one of"),
        ({"query": "SELECT 1", "parameters": "zip=1"}, "parameters must be an object"),
        ({"query": "SELECT 1", "qurey": "typo"}, "unknown input field(s): qurey"),
    ],
)
def test_malformed_input_is_a_terminal_error(people_db, fields, message):
    with pytest.raises(InputError) as caught:
        run_query({"connection_string": DB, **fields})
    assert message in caught.value.message
    assert not caught.value.retryable


def test_numbers_given_as_strings_by_workflow_expressions_are_accepted(numbers_db):
    out = run_query({"connection_string": "numbers.db", "query": "SELECT n FROM numbers", "max_rows": "3"})
    assert out["rowCount"] == 3


# -- row limit and fetch modes -------------------------------------------------------------


def test_truncation_at_exactly_max_rows_and_one_more(numbers_db):
    exact = run_query(connection_string="numbers.db", query="SELECT n FROM numbers", max_rows=10)
    over = run_query(connection_string="numbers.db", query="SELECT n FROM numbers", max_rows=9)
    assert exact["rowCount"] == 10 and exact["truncated"] is False
    assert over["rowCount"] == 9 and over["truncated"] is True
    assert [r["n"] for r in over["rows"]] == list(range(1, 10))


def test_keyword_fields_override_a_mapping_and_leave_it_unchanged(people_db):
    task = {"connection_string": DB, "query": "SELECT * FROM people", "max_rows": 3}
    one = run_query(task, max_rows=1)
    assert one["rowCount"] == 1 and one["truncated"] is True and one["rows"][0]["name"] == "John"
    added = run_query(task, shape="arrays", fetch="value")
    assert added["value"] == "John"
    assert task == {"connection_string": DB, "query": "SELECT * FROM people", "max_rows": 3}
    assert run_query(task)["rowCount"] == 3
    with pytest.raises(InputError, match="unknown input field"):
        run_query(task, max_row=1)  # a misspelt keyword is refused like a misspelt key


def test_max_rows_is_capped_by_the_worker(numbers_db, monkeypatch):
    monkeypatch.setenv("SQLADAPTER_MAX_ROWS", "4")
    out = run_query(connection_string="numbers.db", query="SELECT n FROM numbers", max_rows=1000)
    assert out["rowCount"] == 4 and out["truncated"] is True


def test_the_default_row_limit_is_1000(data_dir):
    with sqlite3.connect(data_dir / "big.db") as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1500)])
    out = run_query(connection_string="big.db", query="SELECT n FROM t")
    assert out["rowCount"] == 1000 and out["truncated"] is True


def test_fetch_one_and_value(numbers_db):
    one = run_query(connection_string="numbers.db", query="SELECT n FROM numbers ORDER BY n", fetch="one")
    value = run_query(connection_string="numbers.db", query="SELECT MAX(n) AS m FROM numbers", fetch="value")
    none = run_query(connection_string="numbers.db", query="SELECT n FROM numbers WHERE n > 99", fetch="one")
    empty = run_query(connection_string="numbers.db", query="SELECT n FROM numbers WHERE n > 99", fetch="value")
    assert one["row"] == {"n": 1} and one["truncated"] is True and "rows" not in one
    assert value["value"] == 10 and value["truncated"] is False
    assert none["row"] is None and none["rowCount"] == 0
    assert empty["value"] is None


def test_shape_arrays(numbers_db):
    out = run_query(connection_string="numbers.db", query="SELECT n, n * 2 AS d FROM numbers LIMIT 2", shape="arrays")
    assert out["rows"] == [[1, 2], [2, 4]]
    assert [c["name"] for c in out["columns"]] == ["n", "d"]
    value = run_query(connection_string="numbers.db", query="SELECT 42", shape="arrays", fetch="value")
    assert value["value"] == 42


def test_duplicate_column_names_are_an_error_not_a_lost_column(people_db):
    with pytest.raises(InputError, match="more than one column named 'name'"):
        q("SELECT p.name, q.name FROM people p JOIN people q ON p.zip_code = q.zip_code")
    arrays = q("SELECT p.name, q.name FROM people p JOIN people q ON p.zip_code = q.zip_code LIMIT 1", shape="arrays")
    assert len(arrays["rows"][0]) == 2


# -- read-only: the parser, then the database ----------------------------------------------

WRITES = [
    "DELETE FROM people",
    "delete from people where 1=1",
    "INSERT INTO people VALUES ('a','b','c','d')",
    "UPDATE people SET name = 'x'",
    "DROP TABLE people",
    "CREATE TABLE x (a INT)",
    "ALTER TABLE people ADD COLUMN x INT",
    "WITH d AS (DELETE FROM people RETURNING *) SELECT * FROM d",
    "ATTACH DATABASE 'other.db' AS other",
    "PRAGMA journal_mode = DELETE",
    "VACUUM INTO 'copy.db'",
    "REPLACE INTO people VALUES ('a','b','c','d')",
    "BEGIN",
    "SELECT load_extension('evil')",
    "/* comment */ DeLeTe /* x */ FROM people",
]


@pytest.mark.parametrize("query", WRITES)
def test_writes_are_stopped_by_the_parser(people_db, query):
    before = people_db.read_bytes()
    with pytest.raises(NotReadOnlyError) as caught:
        q(query)
    assert not caught.value.retryable
    assert people_db.read_bytes() == before


@pytest.mark.parametrize("query", ["SELECT 1; DELETE FROM people", "SELECT 1; SELECT 2", "SELECT 1;;SELECT 2"])
def test_more_than_one_statement_is_refused(people_db, query):
    with pytest.raises(NotReadOnlyError, match="exactly one"):
        q(query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM people",
        "WITH z AS (SELECT zip_code FROM people) SELECT * FROM z",
        "VALUES (1, 2), (3, 4)",
        "EXPLAIN QUERY PLAN SELECT * FROM people",
        "EXPLAIN SELECT * FROM people",
        "SELECT * FROM people UNION ALL SELECT * FROM people",
        "SELECT * FROM pragma_table_info('people')",
        "SELECT 1;",
    ],
)
def test_read_only_statements_pass(people_db, query):
    assert q(query)["rowCount"] >= 1


@pytest.fixture
def parser_bypassed(monkeypatch):
    """Switch the guard off, so only the database-level read-only layer stands."""
    monkeypatch.setattr("sqladapter.guard.check", lambda *args, **kwargs: None)
    yield


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM people",
        "INSERT INTO people VALUES ('a','b','c','d')",
        "UPDATE people SET name = 'x'",
        "DROP TABLE people",
        "CREATE TABLE x (a INT)",
        "ALTER TABLE people RENAME TO p2",
        "WITH d AS (DELETE FROM people RETURNING *) SELECT * FROM d",
        "ATTACH DATABASE 'other.db' AS other",
        "PRAGMA user_version = 7",
        "PRAGMA journal_mode = DELETE",
        "VACUUM INTO 'copy.db'",
        "SELECT load_extension('evil')",
        "BEGIN IMMEDIATE",
    ],
)
def test_writes_are_stopped_by_the_database_when_the_parser_is_bypassed(people_db, parser_bypassed, query):
    before = people_db.read_bytes()
    with pytest.raises((PermissionDeniedError, QueryError, NotReadOnlyError)) as caught:
        q(query)
    assert not caught.value.retryable
    assert people_db.read_bytes() == before
    assert not (people_db.parent / "copy.db").exists()
    assert not (people_db.parent / "other.db").exists()


# -- time limit ----------------------------------------------------------------------------


def test_a_runaway_recursive_cte_is_stopped_by_the_time_limit(people_db):
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    with pytest.raises(QueryTimeoutError) as caught:
        q(runaway, timeout_ms=200)
    assert caught.value.retryable is True
    # The connection is still usable after the interrupt.
    assert q("SELECT COUNT(*) AS n FROM people")["rows"] == [{"n": 5}]


def test_timeout_is_capped_by_the_worker(people_db, monkeypatch):
    monkeypatch.setenv("SQLADAPTER_MAX_TIMEOUT_MS", "100")
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    with pytest.raises(QueryTimeoutError):
        q(runaway, timeout_ms=3_600_000)


# -- error classes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, error, text",
    [
        ("SELEC * FROM people", QueryError, "cannot parse"),
        ("SELECT * FROM peple", QueryError, "no such table: peple"),
        ("SELECT nmae FROM people", QueryError, "no such column: nmae"),
        ("SELECT unknown_function(1)", NotReadOnlyError, "function unknown_function() is not allowed"),
    ],
)
def test_query_errors_are_terminal(people_db, query, error, text):
    with pytest.raises(error) as caught:
        q(query)
    assert text in caught.value.message
    assert caught.value.retryable is False


def test_a_locked_database_is_a_retryable_lock_error(people_db):
    writer = sqlite3.connect(people_db, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LockTimeoutError) as caught:
            q("SELECT * FROM people")
        assert caught.value.retryable is True
    finally:
        writer.rollback()
        writer.close()
    assert q("SELECT COUNT(*) AS n FROM people")["rows"] == [{"n": 5}]


def test_a_file_that_is_not_a_database_is_terminal(data_dir):
    (data_dir / "notes.db").write_text("not a database at all" * 100)
    with pytest.raises(QueryError) as caught:
        run_query(connection_string="notes.db", query="SELECT 1 FROM sqlite_master")
    assert not caught.value.retryable


def test_a_vanished_database_directory_is_retryable(data_dir, people_db, monkeypatch):
    # The file was there when the connection was resolved, then its volume went away.
    q("SELECT 1")
    close_default()
    settings_dir = data_dir
    people_db.rename(settings_dir / "moved.db")
    (settings_dir / "fake_people.db").mkdir()
    with pytest.raises((DatabaseUnavailableError, QueryError)):
        q("SELECT * FROM people")


def test_concurrent_queries_share_the_pool(people_db):
    errors, results = [], []

    def work():
        try:
            for _ in range(20):
                results.append(q("SELECT COUNT(*) AS n FROM people", fetch="value")["value"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [5] * 160
