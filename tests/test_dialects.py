"""One suite, four databases: each behaviour is written once and checked on SQLite, DuckDB,
MariaDB/MySQL and PostgreSQL (real files and real servers)."""

from __future__ import annotations

import json
import threading
import time

import dialect_cases
import pytest
import servers
from click.testing import CliRunner
from servers import mysql_admin, postgresql_admin

from sqladapter import (
    ConnectionConfigError,
    NotReadOnlyError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    Runtime,
    SqlAdapterError,
    UnknownDialectError,
    guard,
    run_query,
)
from sqladapter.cli import cli

DIALECTS = ["sqlite", "duckdb", "mysql", "postgresql"]
SERVERS = ["mysql", "postgresql"]


@pytest.fixture(scope="session")
def mysql_tables(mysql_url):
    dialect_cases.mysql_tables(mysql_url)
    return mysql_url


@pytest.fixture(scope="session")
def postgresql_tables(postgresql_url):
    dialect_cases.postgresql_tables(postgresql_url)
    return postgresql_url


@pytest.fixture(params=DIALECTS)
def case(request, data_dir) -> dialect_cases.Case:
    """The dialect under test, its `numbers` table holding 1..10."""
    name = request.param
    if name == "sqlite":
        return dialect_cases.sqlite_case(data_dir)
    if name == "duckdb":
        try:
            import duckdb  # noqa: F401
        except ImportError:
            from servers import server_unavailable

            server_unavailable("duckdb is not installed: pip install ./plugins/sqladapter-duckdb")
        return dialect_cases.duckdb_case(data_dir)
    if name == "mysql":
        return dialect_cases.mysql_case(request.getfixturevalue("mysql_tables"))
    return dialect_cases.postgresql_case(request.getfixturevalue("postgresql_tables"))


@pytest.fixture(params=SERVERS)
def server(request, data_dir) -> dialect_cases.Case:
    """A dialect with a server behind it: connections the server can kill, passwords it can refuse."""
    if request.param == "mysql":
        return dialect_cases.mysql_case(request.getfixturevalue("mysql_tables"))
    return dialect_cases.postgresql_case(request.getfixturevalue("postgresql_tables"))


@pytest.fixture
def no_parser(monkeypatch):
    """The parser's read-only check switched off, so only the database stands in the way."""
    monkeypatch.setattr(guard, "check", lambda *args, **kwargs: None)
    yield


def query(case, sql, **fields):
    return run_query(**case.target, query=sql, **fields)


def numbers(case) -> list[int]:
    return [row["n"] for row in query(case, "SELECT n FROM numbers ORDER BY n")["rows"]]


# -- queries and parameters ---------------------------------------------------------------------------


def test_a_bare_query(case):
    out = query(case, "SELECT n FROM numbers ORDER BY n")
    assert out["rows"] == [{"n": n} for n in range(1, 11)]
    assert [c["name"] for c in out["columns"]] == ["n"]
    assert out["rowCount"] == 10 and out["truncated"] is False
    assert out["dialect"] == case.name


def test_named_parameters(case):
    out = query(case, "SELECT n FROM numbers WHERE n BETWEEN :low AND :high ORDER BY n", parameters={"low": 3, "high": 5})
    assert [r["n"] for r in out["rows"]] == [3, 4, 5]


def test_a_named_parameter_used_twice(case):
    out = query(case, "SELECT n FROM numbers WHERE n = :v OR n = :v + 1 ORDER BY n", parameters={"v": 4})
    assert [r["n"] for r in out["rows"]] == [4, 5]


def test_positional_parameters(case):
    out = query(case, "SELECT n FROM numbers WHERE n IN (?, ?) ORDER BY n", parameters=[2, 7])
    assert [r["n"] for r in out["rows"]] == [2, 7]


def test_parameter_values_are_bound_never_spliced(case):
    hostile = "it's 100% ' OR '1'='1"
    out = query(case, "SELECT '5%' AS pct, :v AS v, count(*) AS c FROM numbers WHERE n = :n", parameters={"v": hostile, "n": 3})
    assert out["rows"] == [{"pct": "5%", "v": hostile, "c": 1}]


# -- limits and fetch modes -----------------------------------------------------------------------------


def test_exactly_max_rows_is_not_truncated(case):
    out = query(case, "SELECT n FROM numbers ORDER BY n", max_rows=10)
    assert out["rowCount"] == 10 and out["truncated"] is False


def test_one_row_more_than_max_rows_is_truncated(case):
    out = query(case, "SELECT n FROM numbers ORDER BY n", max_rows=9)
    assert [r["n"] for r in out["rows"]] == list(range(1, 10))
    assert out["rowCount"] == 9 and out["truncated"] is True


def test_a_million_row_result_stops_at_max_rows_and_the_next_query_runs(case):
    # 10^6 rows from a cross join, once without and once with the query's own LIMIT.
    big = "SELECT a.n AS n FROM numbers a, numbers b, numbers c, numbers d, numbers e, numbers f"
    for sql in (big, big + " LIMIT 1000000"):
        out = query(case, sql, max_rows=5)
        assert out["rowCount"] == 5 and out["truncated"] is True
        assert numbers(case) == list(range(1, 11))


def test_fetch_one(case):
    out = query(case, "SELECT n, n * 2 AS twice FROM numbers WHERE n > :n ORDER BY n", parameters={"n": 3}, fetch="one")
    assert out["row"] == {"n": 4, "twice": 8}
    assert "rows" not in out and out["rowCount"] == 1


def test_fetch_value(case):
    assert query(case, "SELECT count(*) AS c FROM numbers", fetch="value")["value"] == 10


def test_fetch_one_and_value_of_nothing(case):
    empty = "SELECT n FROM numbers WHERE n > 100"
    assert query(case, empty, fetch="one")["row"] is None
    assert query(case, empty, fetch="value")["value"] is None


def test_shape_arrays(case):
    out = query(case, "SELECT n, n + 1 AS m FROM numbers WHERE n <= 2 ORDER BY n", shape="arrays")
    assert out["rows"] == [[1, 2], [2, 3]]


# -- the JSON type contract ---------------------------------------------------------------------------


def test_each_type_in_the_contract(case):
    out = query(case, case.types_query())
    row = out["row"] if "row" in out else out["rows"][0]
    mismatches = {}
    for alias, (sql, expected) in case.types.items():
        value = row[alias]
        ok = expected(value) if callable(expected) else (value == expected and type(value) is type(expected))
        if not ok:
            mismatches[alias] = (sql, value, getattr(expected, "__name__", expected))
    assert not mismatches
    json.dumps(row, allow_nan=False)  # strictly JSON: no NaN, no Python objects


def test_columns_report_the_databases_own_type_names(case):
    out = query(case, case.types_query())
    reported = {c["name"]: c["type"] for c in out["columns"]}
    assert {alias: reported[alias] for alias in case.column_types} == case.column_types


# -- read-only, twice over ----------------------------------------------------------------------------


def test_the_parser_refuses_writes(case):
    for sql in case.refused_by_parser:
        with pytest.raises((NotReadOnlyError, QueryError)) as caught:
            query(case, sql)
        assert caught.value.retryable is False, sql
    assert numbers(case) == list(range(1, 11))


def test_the_database_refuses_writes_the_parser_let_through(case, no_parser):
    for sql in case.refused_by_database:
        with pytest.raises(PermissionDeniedError) as caught:
            query(case, sql)
        assert caught.value.retryable is False, sql
        assert "read-only" in caught.value.message or "read only" in caught.value.message.lower(), sql
    assert numbers(case) == list(range(1, 11))


def test_postgresql_read_only_survives_set_config_on_the_same_connection(no_parser, request):
    # One statement switches the session default off; the next one, on the same kept
    # connection, must still be refused by the database.
    case = dialect_cases.postgresql_case(request.getfixturevalue("postgresql_tables"))
    off = query(case, "SELECT set_config('default_transaction_read_only', 'off', false) AS v")
    assert off["rows"] == [{"v": "off"}]
    with pytest.raises(PermissionDeniedError):
        query(case, "DELETE FROM numbers")
    assert query(case, "SHOW default_transaction_read_only")["rows"] == [{"default_transaction_read_only": "on"}]
    assert numbers(case) == list(range(1, 11))


def test_mysql_zero_dates_stay_text_among_real_dates(request):
    case = dialect_cases.mysql_case(request.getfixturevalue("mysql_tables"))
    out = query(case, "SELECT d, dd FROM zero_dates ORDER BY n")
    assert out["rows"] == [
        {"d": "2024-01-02T03:04:05", "dd": "2024-01-02"},
        {"d": "0000-00-00 00:00:00", "dd": "0000-00-00"},
    ]


def test_postgresql_dates_python_cannot_hold_come_out_as_postgresql_writes_them(request):
    case = dialect_cases.postgresql_case(request.getfixturevalue("postgresql_tables"))
    out = query(
        case,
        "SELECT d, ts, tz, ds FROM (VALUES"
        " (1, DATE '2024-02-29', TIMESTAMP '2024-02-29 13:14:15', TIMESTAMPTZ '2024-02-29 13:14:15+00', ARRAY[DATE '2024-02-29']),"
        " (2, 'infinity', '-infinity', 'infinity', ARRAY['-infinity'::date]),"
        " (3, '0044-03-15 BC', '10000-01-01 00:00:00', NULL, NULL)"
        ") AS t(n, d, ts, tz, ds) ORDER BY n",
    )
    tz = [row.pop("tz") for row in out["rows"]]
    assert dialect_cases.same_instant("2024-02-29T13:14:15+00:00")(tz[0]) and tz[1:] == ["infinity", None]
    assert out["rows"] == [
        {"d": "2024-02-29", "ts": "2024-02-29T13:14:15", "ds": ["2024-02-29"]},
        {"d": "infinity", "ts": "-infinity", "ds": ["-infinity"]},
        {"d": "0044-03-15 BC", "ts": "10000-01-01 00:00:00", "ds": None},
    ]


def test_duckdb_infinities_are_infinity_and_the_last_real_day_stays_a_date(data_dir):
    # The python client reads 'infinity' as date.max / datetime.max, equal to a real 9999-12-31;
    # in one column, row by row, each must still come back as what it is.
    case = dialect_cases.duckdb_case(data_dir)
    out = query(
        case,
        "SELECT d, ts, tz, ds FROM (VALUES"
        " (1, DATE '2024-02-29', TIMESTAMP '2024-02-29 13:14:15', TIMESTAMPTZ '2024-02-29 13:14:15+00', [DATE '2024-02-29']),"
        " (2, 'infinity'::DATE, '-infinity'::TIMESTAMP, 'infinity'::TIMESTAMPTZ, ['-infinity'::DATE]),"
        " (3, DATE '9999-12-31', TIMESTAMP '9999-12-31 23:59:59.999999', NULL, [DATE '0001-01-01']),"
        " (4, '-infinity'::DATE, TIMESTAMP '0001-01-01 00:00:00', '-infinity'::TIMESTAMPTZ, NULL),"
        " (5, DATE '0044-03-15 (BC)', TIMESTAMP '294247-01-10 04:00:54', NULL, NULL)"
        ") AS t(n, d, ts, tz, ds) ORDER BY n",
    )
    tz = [row.pop("tz") for row in out["rows"]]
    assert dialect_cases.same_instant("2024-02-29T13:14:15+00:00")(tz[0]) and tz[1:] == ["infinity", None, "-infinity", None]
    assert out["rows"] == [
        {"d": "2024-02-29", "ts": "2024-02-29T13:14:15", "ds": ["2024-02-29"]},
        {"d": "infinity", "ts": "-infinity", "ds": ["-infinity"]},
        {"d": "9999-12-31", "ts": "9999-12-31T23:59:59.999999", "ds": ["0001-01-01"]},
        {"d": "-infinity", "ts": "0001-01-01T00:00:00", "ds": None},
        # Years Python cannot hold: as DuckDB writes them.
        {"d": "0044-03-15 (BC)", "ts": "294247-01-10 04:00:54", "ds": None},
    ]


def test_duckdb_maps_with_keys_that_are_not_text_are_lists_of_key_value_objects(data_dir):
    case = dialect_cases.duckdb_case(data_dir)
    out = query(
        case,
        # An empty map as MAP([], []): sqlglot writes MAP {}::MAP(...) back as "MAP MAP()", which
        # it cannot read again, so that spelling is refused.
        "SELECT m FROM (VALUES (1, MAP {3: 'c', 1: 'a'}), (2, MAP([]::INTEGER[], []::VARCHAR[])), (3, NULL),"
        " (4, MAP {2: NULL})) AS t(n, m) ORDER BY n",
    )
    assert [row["m"] for row in out["rows"]] == [
        [{"key": 3, "value": "c"}, {"key": 1, "value": "a"}],  # the map's order, not the keys'
        [],
        None,
        [{"key": 2, "value": None}],
    ]


def test_mysql_time_is_a_clock_reading_in_every_row(request):
    case = dialect_cases.mysql_case(request.getfixturevalue("mysql_tables"))
    out = query(
        case,
        "SELECT CAST(t AS TIME(6)) AS t FROM (SELECT 1 AS n, '00:00:00' AS t UNION ALL SELECT 2, '23:59:59.000001'"
        " UNION ALL SELECT 3, '100:00:00' UNION ALL SELECT 4, '-01:02:03.25' UNION ALL SELECT 5, NULL) AS x ORDER BY n",
    )
    assert [row["t"] for row in out["rows"]] == ["00:00:00", "23:59:59.000001", "100:00:00", "-01:02:03.250000", None]
    assert out["columns"] == [{"name": "t", "type": "TIME"}]


def test_postgresql_types_outside_the_contract_fail_naming_the_column_and_type(request):
    # A range or a row would otherwise come back as some text that looks like an answer.
    case = dialect_cases.postgresql_case(request.getfixturevalue("postgresql_tables"))
    refused = {
        "SELECT int4range(1, 10) AS span": ("'span'", "int4range", "Range"),
        "SELECT ARRAY[int4range(1, 10)] AS spans": ("'spans'", "int4range[]", "Range"),
        "SELECT ROW(1, 'a') AS pair": ("'pair'", "record", "to_jsonb"),
    }
    for sql, words in refused.items():
        with pytest.raises(QueryError) as caught:
            query(case, sql)
        assert caught.value.retryable is False, sql
        assert all(word in caught.value.message for word in words), caught.value.message
    # ... and the same types cast to text come back as PostgreSQL writes them.
    out = query(case, "SELECT int4range(1, 10)::text AS span, to_jsonb(ROW(1, 'a')) AS pair")
    assert out["rows"] == [{"span": "[1,10)", "pair": {"f1": 1, "f2": "a"}}]


def test_duckdb_connection_options_cannot_undo_read_only(data_dir, monkeypatch):
    dialect_cases.duckdb_case(data_dir)
    database = data_dir / "numbers.duckdb"
    for option in ("enable_external_access=true", "lock_configuration=false", "access_mode=read_write"):
        monkeypatch.setenv("SQLADAPTER_CONNECTION_LOOSE", f"duckdb:///{database}?{option}")
        with pytest.raises(ConnectionConfigError) as caught:
            run_query(connection="loose", query="SELECT 1")
        assert option.split("=")[0] in caught.value.message


# -- time limit -----------------------------------------------------------------------------------------


def test_the_time_limit_stops_a_slow_query_and_the_connection_stays_usable(case):
    started = time.monotonic()
    with pytest.raises(QueryTimeoutError) as caught:
        query(case, case.slow_query, timeout_ms=500)
    elapsed = time.monotonic() - started
    # The slow query runs 5 s or more; stopped at 0.5 s, it is back long before that.
    assert elapsed < 4, f"stopped only after {elapsed:.1f}s"
    assert caught.value.retryable is True
    assert numbers(case) == list(range(1, 11))


def test_a_time_limit_that_ends_before_the_query_starts_still_stops_it(case):
    # With 1 ms, and threads competing for the interpreter, the limit often passes before the
    # database has begun the query; it must be stopped all the same, every time. In threads
    # that are waited on with a timeout, so a query that is never stopped fails the test
    # instead of hanging it.
    outcomes = []

    def run():
        for _ in range(10):
            try:
                query(case, case.slow_query, timeout_ms=1)
                outcomes.append("finished")
            except QueryTimeoutError:
                outcomes.append("stopped")

    workers = [threading.Thread(target=run, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    for worker in workers:
        worker.join(timeout=max(0, deadline - time.monotonic()))
    assert not any(w.is_alive() for w in workers), f"a query with a 1 ms time limit still ran after 60 s: {outcomes}"
    assert outcomes == ["stopped"] * 40


# -- servers: killed connections, refused credentials --------------------------------------------------


def _session_id(case) -> int:
    sql = "SELECT CONNECTION_ID() AS id" if case.name == "mysql" else "SELECT pg_backend_pid() AS id"
    return int(query(case, sql, fetch="value")["value"])


def _kill(case, session_id: int) -> None:
    if case.name == "mysql":
        with mysql_admin() as conn, conn.cursor() as cursor:
            cursor.execute(f"KILL {int(session_id)}")
    else:
        with postgresql_admin() as conn:
            # With a timeout, pg_terminate_backend waits until the backend is gone.
            assert conn.execute("SELECT pg_terminate_backend(%s, 5000)", (session_id,)).fetchone()[0]


def test_the_next_query_succeeds_after_the_server_kills_the_connection(server):
    before = _session_id(server)
    assert _session_id(server) == before  # the connection is reused between queries
    _kill(server, before)
    after = _session_id(server)
    assert after != before
    assert numbers(server) == list(range(1, 11))


def test_a_wrong_password_is_terminal_and_never_shown(server, monkeypatch):
    password = "Wr0ng-s3cret-pw"
    url = server.target["connection_string"]
    scheme, rest = url.split("://", 1)
    user = "root" if server.name == "mysql" else "sqla_dialects_nobody"  # PostgreSQL here trusts any password
    monkeypatch.setenv("SQLADAPTER_CONNECTION_WRONG_PASSWORD", f"{scheme}://{user}:{password}@{rest.split('@', 1)[1]}")
    with pytest.raises(PermissionDeniedError) as caught:
        run_query(connection="wrong_password", query="SELECT 1 AS one")
    error = caught.value
    assert error.retryable is False
    assert password not in str(error) and password not in json.dumps(error.to_dict())
    assert password not in repr(error.__cause__) and password not in repr(error.__context__)


# -- plugins ------------------------------------------------------------------------------------------


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


def test_every_dialect_error_is_a_sqladapter_error(case):
    for sql in ("SELECT * FROM no_such_table", "SELECT n FROM numbers WHERE"):
        with pytest.raises(SqlAdapterError) as caught:
            query(case, sql)
        assert isinstance(caught.value, (QueryError, NotReadOnlyError)) and caught.value.retryable is False
