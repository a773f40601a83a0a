"""The read-only promise by design: allowlists from the catalogs, canonical SQL, no connection
options from task input, no state from one task to the next.

Every effect is checked with the raw driver, outside sqladapter: the catalog read again, the
lock looked up, the setting read on the very connection the next task gets.
"""

from __future__ import annotations

import sqlite3
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import mysql_admin, postgresql_admin

from sqladapter import ConnectionConfigError, NotReadOnlyError, SqlAdapterError, run_query
from sqladapter.runtime import close_default, default

# -- allowlists, derived from each database's catalog ----------------------------------------------


@pytest.mark.servers
def test_postgresql_allows_only_non_volatile_catalog_functions_or_reviewed_ones(postgresql_url):
    import sqladapter_postgresql as pg

    target = default().resolve(postgresql_url)
    allowed = default().pools.allowed_functions(target)
    functions = {name for name in allowed if not name.startswith(pg.OPERATOR)}
    with postgresql_admin("sqla_dialects") as admin:
        volatility: dict[str, set[str]] = {}
        for name, kind in admin.execute(
            "SELECT proname, provolatile FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace"
        ):
            volatility.setdefault(name, set()).add(kind)
        outside = {row[0] for row in admin.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace <> 'pg_catalog'::regnamespace"
        )}
    for name in functions:
        assert name in volatility, f"{name} is allowed but not a pg_catalog function"
        assert "v" not in volatility[name] or name in pg.REVIEWED_FUNCTIONS, f"{name} is volatile and not reviewed"
    assert not functions & pg.EXCLUDED_FUNCTIONS
    # What the review found getting through, and its families: none of it is on the list.
    for name in ("lo_from_bytea", "lo_create", "lo_put", "lo_import", "pg_advisory_lock", "pg_try_advisory_lock_shared",
                 "set_config", "ts_stat", "ts_rewrite", "brin_summarize_new_values", "gin_clean_pending_list",
                 "pg_notify", "pg_terminate_backend", "pg_read_file", "pg_ls_dir", "pg_switch_wal", "query_to_xml",
                 "table_to_xml", "nextval", "setseed", "dblink"):
        assert name not in allowed, name
    assert functions - outside  # a real list, thousands long
    assert len(functions) > 1500


def test_duckdb_allows_only_non_volatile_catalog_functions_or_reviewed_ones(data_dir):
    import duckdb
    import sqladapter_duckdb as dk

    duckdb.connect(str(data_dir / "cat.duckdb")).close()
    target = default().resolve("cat.duckdb")
    allowed = default().pools.allowed_functions(target)
    with duckdb.connect(":memory:") as raw:
        rows = raw.execute("SELECT function_name, function_type, stability, internal FROM duckdb_functions()").fetchall()
    kinds: dict[str, set[tuple]] = {}
    for name, kind, stability, internal in rows:
        kinds.setdefault(name.lower(), set()).add((kind, stability, internal))
    for name in allowed:
        entries = kinds[name]
        assert all(internal for _, _, internal in entries), name
        if name in dk.REVIEWED_FUNCTIONS or name in dk.TABLE_FUNCTIONS:
            continue
        assert any(kind in ("scalar", "aggregate", "window") and stability != "VOLATILE" or kind == "macro"
                   for kind, stability, _ in entries), name
    for name in ("json_execute_serialized_sql", "json_serialize_sql", "query", "query_table", "setseed", "nextval",
                 "read_csv", "read_text", "glob", "duckdb_secrets", "which_secret", "checkpoint"):
        assert name not in allowed, name


def test_sqlite_allows_only_deterministic_builtins_or_reviewed_ones():
    from sqladapter.default_plugins import sqlite as lite

    with sqlite3.connect(":memory:") as raw:
        rows = raw.execute("SELECT name, builtin, type, flags FROM pragma_function_list").fetchall()
    entries: dict[str, list[tuple]] = {}
    for name, builtin, kind, flags in rows:
        entries.setdefault(name, []).append((builtin, kind, flags))
    for name in lite._FUNCTIONS:
        if name in lite._REVIEWED_FUNCTIONS:
            continue
        assert all(builtin and (kind != "s" or flags & 0x800) for builtin, kind, flags in entries[name]), name
    for name in ("load_extension", "changes", "total_changes", "last_insert_rowid", "fts3_tokenizer", "sqlite_log"):
        assert name not in lite._FUNCTIONS, name


def test_sqlite_enforces_the_allowlist_in_the_database_too(people_db, monkeypatch):
    """With the guard switched off, SQLite's own authorizer still refuses a function off the list."""
    from sqladapter import guard

    monkeypatch.setattr(guard, "check", lambda *args, **kwargs: None)
    try:
        with pytest.raises(SqlAdapterError, match="not authorized") as caught:
            run_query(connection_string="fake_people.db", query="SELECT changes() AS c")
        assert not caught.value.retryable
        assert run_query(connection_string="fake_people.db", query="SELECT upper(name) AS u FROM people")["rowCount"] == 5
    finally:
        close_default()  # statements checked with the guard off do not stay cached


@pytest.mark.servers
def test_user_defined_functions_are_refused_even_when_they_only_read(postgresql_url):
    with postgresql_admin("sqla_dialects") as admin:
        admin.execute("CREATE OR REPLACE FUNCTION public.sqla_harmless() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 1'")
    try:
        for query in ("SELECT sqla_harmless()", "SELECT public.sqla_harmless()", 'SELECT "sqla_harmless"()'):
            with pytest.raises(NotReadOnlyError, match="not allowed"):
                run_query(connection_string=postgresql_url, query=query)
    finally:
        with postgresql_admin("sqla_dialects") as admin:
            admin.execute("DROP FUNCTION IF EXISTS public.sqla_harmless()")


# -- what runs is what was checked -------------------------------------------------------------------


@pytest.mark.servers
def test_postgresql_runs_the_canonical_text_from_its_own_parser(postgresql_url):
    # The server's parser decodes U&"..." the way the server does: the guard sees the real name.
    with pytest.raises(NotReadOnlyError, match="pg_advisory_lock_shared"):
        run_query(connection_string=postgresql_url, query='SELECT U&"pg\\005fadvisory\\005flock\\005fshared"(9014)')
    # Comments, odd spacing and escape strings are gone from what runs; the answer is the same.
    out = run_query(
        connection_string=postgresql_url,
        query="SELECT /* c */ E'it''s\\n' AS a, $t$ ? :x $t$ AS b, :v::int + 1 AS c -- trailing",
        parameters={"v": 41},
    )
    assert out["rows"] == [{"a": "it's\n", "b": " ? :x ", "c": 42}]


PARAMETER_VALUES = [
    "x' OR '1'='1",
    "\\'; DELETE FROM numbers; --",
    "--\u00a0, GET_LOCK('sqla', 0)",
    "%s %(x)s %% $1 ? :name",
    "/*! SELECT 1 */",
    "\u2028\u00a0\u3000 end",
    "\x00"[:0] + "é漢字🙂",
    "\\",
    "'",
]


@pytest.fixture(params=["sqlite", "duckdb", "mysql", "postgresql"])
def any_target(request, data_dir):
    if request.param == "sqlite":
        sqlite3.connect(data_dir / "values.db").close()
        return "values.db"
    if request.param == "duckdb":
        import duckdb

        duckdb.connect(str(data_dir / "values.duckdb")).close()
        return "values.duckdb"
    return request.getfixturevalue(f"{request.param}_url")


@pytest.mark.servers
@pytest.mark.parametrize("value", PARAMETER_VALUES)
def test_a_parameter_is_a_value_on_every_dialect(any_target, value):
    named = run_query(connection_string=any_target, query="SELECT :v AS v", parameters={"v": value})
    positional = run_query(connection_string=any_target, query="SELECT ? AS v, ? AS w", parameters=[value, 7])
    assert named["rows"] == [{"v": value}]
    assert positional["rows"] == [{"v": value, "w": 7}]


@pytest.mark.servers
def test_positional_parameters_keep_their_order_when_the_canonical_text_reorders_clauses(mysql_url):
    # MySQL's LIMIT offset, count is written LIMIT count OFFSET offset in the canonical text.
    out = run_query(connection_string=mysql_url, query="SELECT n FROM numbers ORDER BY n LIMIT ?, ?", parameters=[1, 2])
    with mysql_admin("sqla_dialects") as admin, admin.cursor() as cursor:
        cursor.execute("SELECT n FROM numbers ORDER BY n LIMIT 1, 2")
        expected = [{"n": n} for (n,) in cursor.fetchall()]
    assert out["rows"] == expected


# -- task input never configures a connection --------------------------------------------------------

INLINE_OPTIONS = {
    "mysql": [
        "init_command=UPDATE%20numbers%20SET%20n%3Dn%2B1",
        "local_infile=1",
        "read_default_file=/proc/self/environ",
        "client_flag=65536",
        "sql_mode=NO_BACKSLASH_ESCAPES",
        "password=x",
        "PASSWORD=x",
        "charset=gbk",
        "unix_socket=/tmp/x.sock",
    ],
    "postgresql": [
        "options=-c%20default_transaction_read_only%3Doff",
        "password=x",
        "sslmode=disable",
        "service=x",
        "passfile=/proc/self/environ",
        "target_session_attrs=read-write",
        "host=/tmp",
    ],
}


@pytest.mark.servers
@pytest.mark.parametrize(
    "dialect, option", [(d, o) for d, options in INLINE_OPTIONS.items() for o in options]
)
def test_inline_url_options_are_refused_and_nothing_runs(request, dialect, option):
    url = request.getfixturevalue(f"{dialect}_url")
    before = _numbers(dialect)
    with pytest.raises(ConnectionConfigError, match="named connection") as caught:
        run_query(connection_string=f"{url}?{option}", query="SELECT 1 AS one")
    assert not caught.value.retryable
    key, _, value = option.partition("=")
    assert key in caught.value.message
    assert value not in caught.value.message or len(value) < 3
    assert _numbers(dialect) == before


@pytest.mark.servers
def test_named_connections_may_carry_options(postgresql_url, monkeypatch):
    monkeypatch.setenv("SQLADAPTER_CONNECTION_TUNED", f"{postgresql_url}?options=-c%20search_path%3Dpg_catalog,public")
    out = run_query(connection="tuned", query="SELECT current_setting('search_path') AS sp")
    assert out["rows"] == [{"sp": "pg_catalog,public"}]


def _numbers(dialect: str) -> list:
    if dialect == "mysql":
        with mysql_admin("sqla_dialects") as admin, admin.cursor() as cursor:
            cursor.execute("SELECT n FROM numbers ORDER BY n")
            return cursor.fetchall()
    with postgresql_admin("sqla_dialects") as admin:
        return admin.execute("SELECT n FROM numbers ORDER BY n").fetchall()


# -- no state crosses tasks -----------------------------------------------------------------------


def _poison(url: str, statements: list[str]) -> int:
    """Run `statements` on the connection this thread keeps for `url`, as a bypass would; its id."""
    target = default().resolve(url)
    connection, kept = default().pools.checkout(target)
    assert kept, "the dialect should keep the connection for the next task"
    raw = connection.dbapi_connection
    if hasattr(raw, "execute"):  # psycopg
        for statement in statements:
            raw.execute(statement)
        ident = raw.info.backend_pid
    else:  # PyMySQL
        with raw.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        ident = raw.thread_id()
    default().pools.checkin(target, connection, kept)
    return ident


@pytest.mark.servers
def test_postgresql_task_b_sees_nothing_of_task_a_on_the_same_connection(postgresql_url):
    run_query(connection_string=postgresql_url, query="SELECT 1 AS one", timeout_ms=1234)
    # Whatever way task A found to change its session, task B starts from the session as opened.
    pid = _poison(postgresql_url, [
        "SET statement_timeout = 0",
        "SET search_path = pg_catalog",
        "SET standard_conforming_strings = off",
        "SET SESSION default_transaction_read_only = off",
        "SELECT pg_advisory_lock(9301)",
    ])
    out = run_query(
        connection_string=postgresql_url,
        query="SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS st, "
        "current_setting('search_path') AS sp, current_setting('standard_conforming_strings') AS scs, "
        "current_setting('default_transaction_read_only') AS ro",
        timeout_ms=1234,
    )
    row = out["rows"][0]
    assert row["pid"] == pid, "task B ran on another connection: the test proves nothing"
    assert (row["st"], row["sp"], row["scs"], row["ro"]) == ("1234ms", '"$user", public', "on", "on")
    with postgresql_admin("sqla_dialects") as admin:
        held = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,)).fetchone()
    assert held == (0,)
    # The time limit is set anew, never cached: same timeout_ms as before, and it holds.
    with pytest.raises(SqlAdapterError) as caught:
        run_query(connection_string=postgresql_url, query="SELECT pg_sleep(3)", timeout_ms=1234)
    assert caught.value.type == "timeout"


@pytest.mark.servers
def test_mysql_task_b_sees_nothing_of_task_a_on_the_same_connection(mysql_url):
    run_query(connection_string=mysql_url, query="SELECT 1 AS one", timeout_ms=1500)
    ident = _poison(mysql_url, [
        "SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'",
        "SET SESSION max_statement_time = 0",
        "SET SESSION tx_read_only = 0",
        "SET NAMES latin1",
    ])
    out = run_query(
        connection_string=mysql_url,
        query="SELECT CONNECTION_ID() AS id, @@session.sql_mode AS mode, @@session.max_statement_time AS st, "
        "@@session.tx_read_only AS ro, @@session.character_set_client AS cs, 'a\\'b' AS s",
        timeout_ms=1500,
    )
    row = out["rows"][0]
    assert row["id"] == ident, "task B ran on another connection: the test proves nothing"
    assert "ANSI_QUOTES" not in row["mode"] and "NO_BACKSLASH_ESCAPES" not in row["mode"]
    assert (float(row["st"]), row["ro"], row["cs"], row["s"]) == (1.5, 1, "utf8mb4", "a'b")
    with pytest.raises(SqlAdapterError) as caught:
        run_query(connection_string=mysql_url, query="SELECT SLEEP(3)", timeout_ms=1500)
    assert caught.value.type == "timeout"


# -- generated disguises -----------------------------------------------------------------------------

UNICODE_SPACES = ["\u00a0", "\u1680", "\u2000", "\u2007", "\u200b", "\u2028", "\u2029", "\u202f", "\u3000", "\ufeff", "\x0b", "\x0c", "\x85"]
SEPARATORS = [" ", "\n", "\t", "/* x */", "-- c\n", "/**/"]


def _escaped(name: str, draw) -> str:
    """`name` as a PostgreSQL U& identifier, each character escaped or not at random."""
    escape = draw(st.sampled_from(["\\", "!"]))
    chars = "".join(f"{escape}{ord(c):04x}" if draw(st.booleans()) else c for c in name)
    suffix = f" UESCAPE '{escape}'" if escape != "\\" else ""
    return f'U&"{chars}"{suffix}'


@st.composite
def disguised_lock_calls(draw) -> str:
    name = draw(st.sampled_from(["pg_advisory_lock", "pg_try_advisory_lock", "pg_advisory_lock_shared", "set_config",
                                 "lo_from_bytea", "pg_notify"]))
    spelled = draw(st.sampled_from([name, name.upper(), f"pg_catalog.{name}", f'"{name}"', _escaped(name, draw)]))
    args = {"set_config": "('search_path', 'x', false)", "lo_from_bytea": "(0, 'x')", "pg_notify": "('c', 'x')"}.get(name, "(9401)")
    gap = draw(st.lists(st.sampled_from(SEPARATORS + UNICODE_SPACES), min_size=1, max_size=3))
    before = draw(st.sampled_from(["SELECT 1 AS a, ", "SELECT ", "SELECT 'x' AS a --", "SELECT 1 AS a /* ", "SELECT * FROM "]))
    return f"{before}{''.join(gap)}{spelled}{args}"


@pytest.mark.servers
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=disguised_lock_calls())
def test_generated_disguises_never_take_a_lock_or_change_a_setting(postgresql_url, query):
    try:
        run_query(connection_string=postgresql_url, query=query, timeout_ms=2000)
    except SqlAdapterError as exc:
        assert not exc.retryable, exc.message
    with postgresql_admin("sqla_dialects") as admin:
        locks = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        objects = admin.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    assert locks == (0,) and objects == (0,), query
    out = run_query(connection_string=postgresql_url, query="SELECT current_setting('search_path') AS sp")
    assert out["rows"] == [{"sp": '"$user", public'}]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    gaps=st.lists(st.sampled_from(SEPARATORS), min_size=3, max_size=3),
    alias=st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8),
)
def test_plain_comments_and_spacing_do_not_change_the_answer(people_db, gaps, alias):
    query = f"SELECT{gaps[0]}upper(name){gaps[1]}AS \"{alias}\"{gaps[2]}FROM people WHERE zip_code = :z"
    out = run_query(connection_string="fake_people.db", query=query, parameters={"z": "12345"})
    assert out["rows"] == [{alias: "JOHN"}]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(space=st.sampled_from(UNICODE_SPACES), where=st.integers(min_value=0, max_value=3))
def test_non_ascii_spaces_outside_strings_are_refused_and_inside_them_kept(people_db, space, where):
    parts = ["SELECT", "name", "FROM", "people"]
    query = " ".join(parts[: where + 1]) + space + " " + " ".join(parts[where + 1 :])
    with pytest.raises(NotReadOnlyError, match=f"U\\+{ord(space):04X}"):
        run_query(connection_string="fake_people.db", query=query)
    out = run_query(connection_string="fake_people.db", query=f"SELECT 'a{space}b' AS v")
    assert out["rows"] == [{"v": f"a{space}b"}]


@pytest.mark.servers
def test_placeholders_after_non_ascii_text_are_found_on_every_dialect(any_target):
    # The scanners report offsets in characters; a byte count would put them after 'é漢🙂'.
    out = run_query(connection_string=any_target, query="SELECT 'é漢🙂' AS a, :x AS b", parameters={"x": "z"})
    assert out["rows"] == [{"a": "é漢🙂", "b": "z"}]
    out = run_query(connection_string=any_target, query="SELECT 'ü' AS a, ? AS b", parameters=[7])
    assert out["rows"] == [{"a": "ü", "b": 7}]
