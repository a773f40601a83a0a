"""The read-only promise by design, where it is one dialect's: allowlists from the catalogs,
canonical SQL, named connections, generated disguises.

Every effect is checked with the raw driver, outside sqladapter: the catalog read again, the
lock looked up. What every dialect must do (parameters as values, inline URL options refused,
no state from one task to the next, both read-only layers) is the conformance kit's
(`sqladapter.testing`), run by tests/test_sqlite_conformance.py and each plugin's own tests/.
"""

from __future__ import annotations

import sqlite3
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import postgresql_admin

from sqladapter import NotReadOnlyError, SqlAdapterError, run_query
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


# -- named connections are the operator's ----------------------------------------------------------


@pytest.mark.servers
def test_named_connections_may_carry_options(postgresql_url, monkeypatch):
    monkeypatch.setenv("SQLADAPTER_CONNECTION_TUNED", f"{postgresql_url}?options=-c%20search_path%3Dpg_catalog,public")
    out = run_query(connection="tuned", query="SELECT current_setting('search_path') AS sp")
    assert out["rows"] == [{"sp": "pg_catalog,public"}]


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
