"""Whatever a task input holds, the worker answers with a classified error, never "internal".

"internal" is left for real bugs: it is retryable, so Conductor would run a task again and
again for an input that can never work. Hypothesis feeds the worker's task function junk
shaped like task inputs, against a real SQLite file.
"""

from __future__ import annotations

import math

import pytest
from conductor.client.http.models import Task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqladapter.engines.conductor import execute_query_task

FIELDS = ["connection_string", "connection", "query", "parameters", "max_rows", "timeout_ms", "shape", "fetch"]
SQL_PIECES = [
    "SELECT", "*", "FROM", "people", "WHERE", "name", "=", ":n", "?", "(", ")", ",", "'", '"', "`", "--", "/*",
    "*/", ";", "1", "NULL", "U&\"x\"", "\u00a0", "\x00", "LIMIT", "UNION", "WITH", "AS", "x", "$1", "@v",
    "json_extract(", "zeroblob(", "NOT", "\\", "%s", "\u2028",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
connection_strings = st.one_of(
    st.sampled_from([
        "fake_people.db", "missing.db", "people\x00.db", "../outside.db", "/etc/passwd", "sqlite:///fake_people.db?mode=rw",
        "sqlite://", "duckdb:///x.duckdb", "nosuch://host/db", "postgresql://u:p@127.0.0.1:1/x", "mysql://127.0.0.1:1/x",
        "postgresql://127.0.0.1:1/x?options=-c", "", " ", "fake_people.txt", "sqlite:///%00",
    ]),
    st.text(max_size=40),
    json_values,
)
queries = st.one_of(st.lists(st.sampled_from(SQL_PIECES), max_size=12).map(" ".join), st.text(max_size=60), json_values)


@st.composite
def task_inputs(draw) -> dict:
    task = {}
    if draw(st.booleans()):
        task["connection_string"] = draw(connection_strings)
    if draw(st.integers(0, 4)) == 0:
        task["connection"] = draw(st.one_of(st.text(max_size=12), json_values))
    if draw(st.integers(0, 5)):
        task["query"] = draw(queries)
    for field in FIELDS[3:]:
        if draw(st.integers(0, 3)) == 0:
            task[field] = draw(json_values)
    if draw(st.integers(0, 6)) == 0:
        task[draw(st.text(max_size=10))] = draw(json_values)
    return task


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=task_inputs())
def test_junk_task_input_never_ends_as_an_internal_error(people_db, data):
    task = Task(task_id="t-junk", workflow_instance_id="w-junk", task_def_name="query_sql", input_data=data)
    result = execute_query_task(task)
    error = (result.output_data or {}).get("error")
    assert error is None or error["type"] != "internal", (data, result.reason_for_incompletion)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT " + "(" * 3000 + "1" + ")" * 3000,
        "SELECT " + "NOT " * 30_000 + "1",
        "SELECT " + "-" * 50_000 + "1",
        "SELECT " + " + ".join(["1"] * 20_000),
        "SELECT " + "CASE WHEN 1 THEN " * 3000 + "1" + " END" * 3000,
    ],
    ids=["parentheses", "not", "minus", "long-sum", "case"],
)
def test_deep_or_long_expressions_are_terminal_not_internal(people_db, query):
    task = Task(task_id="t-deep", workflow_instance_id="w-deep", task_def_name="query_sql",
                input_data={"connection_string": "fake_people.db", "query": query})
    result = execute_query_task(task)
    error = (result.output_data or {}).get("error")
    assert error is None or (error["type"] != "internal" and not error["retryable"]), error
    assert not math.isnan(0.0)
