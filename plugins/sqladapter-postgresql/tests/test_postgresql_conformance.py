"""The PostgreSQL dialect against sqladapter's conformance kit, on a real server, and what only
PostgreSQL has: dates Python cannot hold, types outside the JSON contract.

The server is SQLADAPTER_TEST_POSTGRESQL_HOST (default 127.0.0.1:5432), as postgres with trust
authentication; the kit uses the database `sqla_kit` on it, created when missing. Without a
server the tests skip with the reason, or fail with SQLADAPTER_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from sqladapter import QueryError
from sqladapter.testing import Database, DialectSuite, same_instant, server_unavailable

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.servers

HOST = os.environ.get("SQLADAPTER_TEST_POSTGRESQL_HOST", "127.0.0.1:5432")
DATABASE = "sqla_kit"
UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def admin(database: str = DATABASE) -> Any:
    """A superuser connection outside sqladapter (autocommit), or a skip naming why there is none."""
    host, _, port = HOST.partition(":")
    try:
        return psycopg.connect(
            host=host, port=int(port or 5432), user="postgres", dbname=database, autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        server_unavailable(f"no PostgreSQL server answers on {HOST}: {str(exc).strip()}")


def _create_database() -> None:
    with admin("postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return
        # CREATE DATABASE copies template1 and fails while anyone else is connected to it.
        for attempt in range(20):
            try:
                conn.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg.errors.DuplicateDatabase:
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.25 * (attempt + 1))
        conn.execute(f"CREATE DATABASE {DATABASE}")


def state(raw: Any) -> dict[str, Any]:
    """Everything in the server a statement could change, besides the kit's own small tables."""
    relations = raw.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind IN ('r','v','m','S','p') "
        "ORDER BY 1"
    ).fetchall()
    sums = {}
    for name, kind in relations:
        if kind != "r":
            continue
        if name in ("kit_rows", "kit_wide"):  # big: counted, not summed, per statement
            sums[name] = raw.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        else:
            sums[name] = raw.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{name}\" t"
            ).fetchone()[0]
    return {
        "relations": relations,
        "checksums": sums,
        "sequence": raw.execute("SELECT last_value, is_called FROM sqla_seq").fetchone(),
        "functions": raw.execute(
            "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1"
        ).fetchall(),
        "schemas": raw.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%' ORDER BY 1"
        ).fetchall(),
        "temporary": raw.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't'").fetchone(),
        "roles": raw.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'sqla_evil%'").fetchall(),
        "databases": raw.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sqla_evil%'").fetchall(),
        "comments": raw.execute("SELECT obj_description('people'::regclass)").fetchone(),
        "advisory_locks": raw.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone(),
        "large_objects": raw.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone(),
        "auto_conf": raw.execute(
            "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'"
        ).fetchone(),
        "extensions": raw.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall(),
    }


def still_running(raw: Any) -> int:
    return raw.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%strpos(repeat%' AND datname = current_database() "
        "AND pid <> pg_backend_pid()"
    ).fetchone()[0]


def end_session(dbapi_connection: Any) -> None:
    with admin() as conn:
        # With a timeout, pg_terminate_backend waits until the backend is gone.
        assert conn.execute("SELECT pg_terminate_backend(%s, 5000)", (dbapi_connection.info.backend_pid,)).fetchone()[0]


INLINE_OPTIONS = [
    "options=-c%20default_transaction_read_only%3Doff",
    "password=x",
    "sslmode=disable",
    "service=x",
    "passfile=/proc/self/environ",
    "target_session_attrs=read-write",
    "host=/tmp",
]


class TestPostgreSQLConformance(DialectSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def database(cls, tmp_path_factory):
        _create_database()
        with admin() as conn:
            for statement in (
                "CREATE EXTENSION IF NOT EXISTS dblink",
                "DROP FUNCTION IF EXISTS sqla_wipe()",
                "DROP PROCEDURE IF EXISTS sqla_wipe_proc()",
                "DROP SEQUENCE IF EXISTS sqla_seq",
                "CREATE SEQUENCE sqla_seq",
                # Passes any parser: only the server's read-only session stops a query calling them.
                "CREATE FUNCTION sqla_wipe() RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM people; RETURN 1; END $$",
                "CREATE PROCEDURE sqla_wipe_proc() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM people; END $$",
            ):
                conn.execute(statement)
        url = f"postgresql+psycopg://postgres@{HOST}/{DATABASE}"
        host = HOST.partition(":")[0]
        yield Database(
            dialect="postgresql",
            connection_string=url,
            raw_connect=lambda: admin(),
            data_dir=tmp_path_factory.mktemp("postgresql-kit"),
            database_refuses=[
                "WITH d AS (DELETE FROM numbers RETURNING n) SELECT n FROM d",
                "CREATE TEMPORARY TABLE kit_sneaky (i INTEGER)",
            ],
            guard_refuses=[
                "WITH d AS (DELETE FROM numbers RETURNING n) SELECT n FROM d",
                "SELECT set_config('default_transaction_read_only', 'off', false)",
                "SELECT pg_read_file('/etc/passwd')",
                "SELECT lo_import('/etc/passwd')",
                "SELECT pg_advisory_lock(1)",
                "SELECT nextval('sqla_seq')",
                "SELECT pg_terminate_backend(1)",
                "SELECT * FROM dblink('host=elsewhere', 'SELECT 1') AS t(i int)",
                "SET default_transaction_read_only = off",
            ],
            # One statement switches the session default off; the next one, on the same kept
            # connection, must still be refused by the database.
            read_only_off=[
                "SELECT set_config('default_transaction_read_only', 'off', false)",
                "SET default_transaction_read_only = off",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            ],
            probe="SELECT (SELECT count(*) FROM people) AS n, current_setting('search_path') AS sp, "
            "current_setting('default_transaction_read_only') AS ro, current_user AS u, "
            "current_setting('statement_timeout') AS st, current_setting('standard_conforming_strings') AS scs, "
            "current_setting('backslash_quote') AS bq, (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()) AS locks",
            state=state,
            state_changes=[
                "SET statement_timeout = 0",
                "SET search_path = pg_catalog",
                "SET standard_conforming_strings = off",
                "SET backslash_quote = on",
                "SET SESSION default_transaction_read_only = off",
                "SELECT pg_advisory_lock(9301)",
                "SELECT set_config('search_path', 'x', false)",
                "CREATE TEMPORARY TABLE kit_temp (i INTEGER)",
            ],
            refused_connection_strings=[f"{url}?{option}" for option in INLINE_OPTIONS],
            slow_query="SELECT pg_sleep(5)",
            # strpos with a needle that defeats its skip table: 13.9 s under statement_timeout=300ms.
            # PostgreSQL looks at interrupts only between calls, so the worker ends the session.
            unstoppable_query="SELECT strpos(repeat('x', 2000000), 'y' || repeat('x', 20000)) AS v",
            unstoppable_message="ended the session",
            still_running=still_running,
            types={
                "null": "NULL",
                "boolean": "true",
                "integer": "42",
                "big integer": "9007199254740993::int8",
                "negative big integer": "(-9007199254740993)::int8",
                "float": "1.5::float8",
                "float nan": "'NaN'::float8",
                "float infinity": "'Infinity'::float8",
                "float negative infinity": "'-Infinity'::float4",
                "decimal": "12.50::numeric",
                "wide decimal": "12345678901234567890.123456789::numeric",
                "decimal nan": "'NaN'::numeric",
                "decimal infinity": "'Infinity'::numeric",
                "text": "'héllo'",
                "bytes": "'\\x00ff'::bytea",
                "empty bytes": "''::bytea",
                "date": "DATE '2024-02-29'",
                "infinite date": "'infinity'::date",
                "negative infinite date": "'-infinity'::date",
                "timestamp": "TIMESTAMP '2024-02-29 13:14:15.5'",
                "infinite timestamp": "'infinity'::timestamp",
                "negative infinite timestamp": "'-infinity'::timestamp",
                "timestamp with time zone": "TIMESTAMPTZ '2024-02-29 13:14:15+02'",
                "time": "TIME '13:14:15'",
                "time with fraction": "TIME '13:14:15.5'",
                "time with time zone": "'13:14:15+02'::timetz",
                "interval": "INTERVAL '1 day 2 hours 3.5 seconds'",
                "uuid": f"'{UUID}'::uuid",
                "network address": "'192.168.0.1/24'::inet",
                "network": "'10.0.0.0/8'::cidr",
                "json": "'{\"a\": [1, 2]}'::jsonb",
                "json scalars": "'[1, \"a\", null, 9007199254740993]'::jsonb",
                "array": "ARRAY[1, 2, 3]",
                "array with null": "ARRAY['a', NULL]::text[]",
                "array of arrays": "'{{1,2},{3,4}}'::int[]",
                "array of decimals": "ARRAY[1.5, 2.25]::numeric[]",
                "array of bytes": "ARRAY['\\x00ff'::bytea]",
            },
            extra_types={
                "json_text": ("'{\"a\": [1, 2]}'::json", {"a": [1, 2]}),
                "uuids": (f"ARRAY['{UUID}'::uuid]", [UUID]),
            },
            column_types={
                "integer": "int4",
                "big integer": "int8",
                "decimal": "numeric",
                "timestamp with time zone": "timestamptz",
                "time": "time",
                "time with time zone": "timetz",
                "interval": "interval",
                "network address": "inet",
                "bytes": "bytea",
                "uuid": "uuid",
                "json": "jsonb",
                "array": "int4[]",
                "array with null": "text[]",
            },
            unreachable=f"postgresql+psycopg://postgres@{host}:9/{DATABASE}",
            # The server trusts 127.0.0.1, so a wrong password still connects: a role that does not
            # exist is what it refuses.
            refused_credentials=f"postgresql+psycopg://sqla_kit_nobody:Wr0ng-s3cret-pw@{HOST}/{DATABASE}",
            password_connection_string=f"postgresql+psycopg://postgres:Sq1a%40kit%3Ap%2Fw%25d%23@{HOST}/{DATABASE}",
            end_session=end_session,
        )

    # -- PostgreSQL's own -----------------------------------------------------------------------

    def test_dates_python_cannot_hold_come_out_as_postgresql_writes_them(self, kit):
        with kit.session() as s:
            out = s.run(
                "SELECT d, ts, tz, ds FROM (VALUES"
                " (1, DATE '2024-02-29', TIMESTAMP '2024-02-29 13:14:15', TIMESTAMPTZ '2024-02-29 13:14:15+00', ARRAY[DATE '2024-02-29']),"
                " (2, 'infinity', '-infinity', 'infinity', ARRAY['-infinity'::date]),"
                " (3, '0044-03-15 BC', '10000-01-01 00:00:00', NULL, NULL)"
                ") AS t(n, d, ts, tz, ds) ORDER BY n"
            )
        tz = [row.pop("tz") for row in out["rows"]]
        assert same_instant("2024-02-29T13:14:15+00:00")(tz[0]) and tz[1:] == ["infinity", None]
        assert out["rows"] == [
            {"d": "2024-02-29", "ts": "2024-02-29T13:14:15", "ds": ["2024-02-29"]},
            {"d": "infinity", "ts": "-infinity", "ds": ["-infinity"]},
            {"d": "0044-03-15 BC", "ts": "10000-01-01 00:00:00", "ds": None},
        ]

    def test_types_outside_the_contract_fail_naming_the_column_and_type(self, kit):
        # A range or a row would otherwise come back as some text that looks like an answer.
        refused = {
            "SELECT int4range(1, 10) AS span": ("'span'", "int4range", "Range"),
            "SELECT ARRAY[int4range(1, 10)] AS spans": ("'spans'", "int4range[]", "Range"),
            "SELECT ROW(1, 'a') AS pair": ("'pair'", "record", "to_jsonb"),
        }
        with kit.session() as s:
            for sql, words in refused.items():
                outcome = s.attempt(sql)
                assert isinstance(outcome.error, QueryError) and not outcome.error.retryable, (sql, outcome.describe())
                assert all(word in outcome.error.message for word in words), outcome.error.message
            # ... and the same types cast to text come back as PostgreSQL writes them.
            out = s.run("SELECT int4range(1, 10)::text AS span, to_jsonb(ROW(1, 'a')) AS pair")
        assert out["rows"] == [{"span": "[1,10)", "pair": {"f1": 1, "f2": "a"}}]
