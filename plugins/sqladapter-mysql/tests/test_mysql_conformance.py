"""The MySQL/MariaDB dialect against sqladapter's conformance kit, on a real server, and what only
MySQL has: zero dates, TIME as a clock reading, LIMIT offset, count.

The server is SQLADAPTER_TEST_MYSQL_HOST (default 127.0.0.1:3306), as root without a password;
the kit uses the database `sqla_kit` on it, created when missing. Without a server the tests
skip with the reason, or fail with SQLADAPTER_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from typing import Any

import pytest

from sqladapter import Runtime, Settings
from sqladapter.testing import Database, DialectSuite, json_document, server_unavailable

pymysql = pytest.importorskip("pymysql")

pytestmark = pytest.mark.servers

HOST = os.environ.get("SQLADAPTER_TEST_MYSQL_HOST", "127.0.0.1:3306")
DATABASE = "sqla_kit"
USER = "sqla_kit_user"
LOCK_NAME = "sqla_security_lock"  # the named lock the hostile corpus tries to take


def admin(database: str | None = DATABASE) -> Any:
    """A root connection outside sqladapter (autocommit), or a skip naming why there is none."""
    host, _, port = HOST.partition(":")
    try:
        return pymysql.connect(
            host=host, port=int(port or 3306), user="root", database=database, autocommit=True, connect_timeout=5
        )
    except pymysql.err.OperationalError as exc:
        server_unavailable(f"no MySQL/MariaDB server answers on {HOST}: {exc.args[-1]}")


def _rows(raw: Any, sql: str, args: Any = None) -> list:
    with raw.cursor() as cursor:
        cursor.execute(sql, args)
        return list(cursor.fetchall())


def state(raw: Any) -> dict[str, Any]:
    """Everything in the server a statement could change, besides the kit's own small tables."""
    tables = _rows(raw, "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1")
    sums = {}
    for name, kind in tables:
        if kind == "BASE TABLE":
            if name in ("kit_rows", "kit_wide"):  # big: counted, not summed, per statement
                sums[name] = _rows(raw, f"SELECT count(*) FROM `{name}`")[0][0]
            else:
                sums[name] = _rows(raw, f"CHECKSUM TABLE `{name}` EXTENDED")[0][1]
    return {
        "tables": tables,
        "checksums": sums,
        "sequence": _rows(raw, "SELECT next_not_cached_value FROM sqla_seq"),
        "routines": _rows(
            raw, "SELECT routine_name FROM information_schema.routines WHERE routine_schema = DATABASE() ORDER BY 1"
        ),
        "users": _rows(raw, "SELECT user, host FROM mysql.user WHERE user LIKE 'sqla_evil%%'"),
        "databases": _rows(raw, "SHOW DATABASES LIKE 'sqla_evil%%'"),
        "server": _rows(raw, f"SELECT IS_FREE_LOCK('{LOCK_NAME}'), @@GLOBAL.read_only"),
    }


def still_running(raw: Any) -> int:
    return _rows(
        raw,
        "SELECT count(*) FROM information_schema.processlist WHERE info LIKE '%%INSTR(REPEAT%%' "
        "AND db = DATABASE() AND id <> CONNECTION_ID()",
    )[0][0]


def end_session(dbapi_connection: Any) -> None:
    with admin() as conn, conn.cursor() as cursor:
        cursor.execute(f"KILL {int(dbapi_connection.thread_id())}")


# Options task input must not set: each configures far more than where the server is.
INLINE_OPTIONS = [
    "init_command=UPDATE%20numbers%20SET%20n%3Dn%2B1",
    "local_infile=1",
    "read_default_file=/proc/self/environ",
    "client_flag=65536",
    "sql_mode=NO_BACKSLASH_ESCAPES",
    "password=x",
    "PASSWORD=x",
    "charset=gbk",
    "unix_socket=/tmp/x.sock",
]


class TestMySQLConformance(DialectSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def database(cls, tmp_path_factory):
        with admin(None) as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
            cursor.execute("SELECT VERSION()")
            mariadb = "mariadb" in cursor.fetchone()[0].lower()
        password = "Sq1a@" + secrets.token_hex(6) + ":p/w%d#"
        with admin() as conn, conn.cursor() as cursor:
            for statement in (
                "DROP FUNCTION IF EXISTS sqla_wipe",
                "DROP PROCEDURE IF EXISTS sqla_wipe_proc",
                "DROP SEQUENCE IF EXISTS sqla_seq",
                "DROP TABLE IF EXISTS dialect_types, zero_dates",
                "CREATE SEQUENCE sqla_seq",
                # Passes any parser: only the server's read-only session stops a query calling them.
                "CREATE FUNCTION sqla_wipe() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM people; RETURN 1; END",
                "CREATE PROCEDURE sqla_wipe_proc() MODIFIES SQL DATA BEGIN DELETE FROM people; END",
                "CREATE TABLE dialect_types (bits BIT(3), doc JSON)",
                "INSERT INTO dialect_types VALUES (b'101', '{\"a\": [1, 2]}')",
                # Legacy data: zero dates, allowed by an empty sql_mode.
                "SET SESSION sql_mode = ''",
                "CREATE TABLE zero_dates (n INTEGER, d DATETIME, dd DATE)",
                "INSERT INTO zero_dates VALUES (1, '2024-01-02 03:04:05', '2024-01-02'), (2, '0000-00-00', '0000-00-00')",
                f"DROP USER IF EXISTS '{USER}'@'%'",
            ):
                cursor.execute(statement)
            # (PyMySQL formats % only when it is given parameters.)
            cursor.execute(f"CREATE USER '{USER}'@'%%' IDENTIFIED BY %s", (password,))
            cursor.execute(f"GRANT SELECT ON {DATABASE}.* TO '{USER}'@'%'")
        url = f"mysql+pymysql://root@{HOST}/{DATABASE}"
        limit = "@@session.max_statement_time" if mariadb else "@@session.max_execution_time"
        read_only = "@@session.tx_read_only" if mariadb else "@@session.transaction_read_only"
        yield Database(
            dialect="mysql",
            connection_string=url,
            raw_connect=lambda: admin(),
            data_dir=tmp_path_factory.mktemp("mysql-kit"),
            database_refuses=["CREATE TEMPORARY TABLE kit_sneaky (i INTEGER)"],
            guard_refuses=[
                "SELECT n FROM numbers INTO OUTFILE '/tmp/sqla_kit_numbers.txt'",
                "SELECT n FROM numbers INTO DUMPFILE '/tmp/sqla_kit_numbers.bin'",
                "SELECT LOAD_FILE('/etc/passwd')",
                "SELECT GET_LOCK('sqla_kit', 0)",
                "SET SESSION TRANSACTION READ WRITE",
            ],
            read_only_off=["SET SESSION TRANSACTION READ WRITE", f"SET SESSION {read_only.removeprefix('@@session.')} = 0"],
            probe=f"SELECT (SELECT count(*) FROM people) AS n, @@session.sql_mode AS mode, DATABASE() AS db, "
            f"IS_USED_LOCK('{LOCK_NAME}') IS NULL AS lock_free, {limit} AS st, {read_only} AS ro, "
            "@@session.character_set_client AS cs, 'a\\'b' AS s",
            state=state,
            # What a bypass of the guard could leave behind that the next query resets (the
            # connection is reset with COM_RESET_CONNECTION before every task).
            state_changes=[
                f"SELECT GET_LOCK('{LOCK_NAME}', 0)",
                "SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'",
                f"SET SESSION {limit.removeprefix('@@session.')} = 0",
                f"SET SESSION {read_only.removeprefix('@@session.')} = 0",
                "SET NAMES latin1",
                "SET SESSION sql_select_limit = 1",
            ],
            refused_connection_strings=[f"{url}?{option}" for option in INLINE_OPTIONS],
            slow_query="SELECT SLEEP(5)",
            # Small enough that the server finishes the call within seconds after KILL (a longer one
            # holds up a server shutdown until it ends).
            unstoppable_query="SELECT INSTR(REPEAT('x', 1000000), CONCAT(REPEAT('x', 5000), 'y')) AS v",
            still_running=still_running,
            types={
                "null": "NULL",
                "integer": "42",
                "big integer": "9007199254740993",
                "negative big integer": "CAST(-9007199254740993 AS SIGNED)",
                "unsigned big integer": "CAST(18446744073709551615 AS UNSIGNED)",
                "float": "CAST(1.5 AS DOUBLE)",
                "decimal": "CAST(12.5 AS DECIMAL(10,2))",
                "wide decimal": "CAST(12345678901234567890.123456789 AS DECIMAL(38,9))",
                "text": "'héllo'",
                "bytes": "x'00ff'",
                "date": "DATE '2024-02-29'",
                "timestamp": "TIMESTAMP '2024-02-29 13:14:15.5'",
                # Not the literal TIME '...': the canonical SQL writes it as CAST(... AS TIME), which
                # MySQL reads as TIME(0) and rounds.
                "time": "CAST('13:14:15' AS TIME)",
            },
            extra_types={
                # MySQL has no boolean: TRUE is the integer 1.
                "yes": ("TRUE", 1),
                # TIME is a clock reading, also of elapsed time (-838:59:59 to 838:59:59): it comes
                # back as the server shows it, hours past 23 and a minus sign included, never as a
                # duration.
                "clock_past_a_day": ("CAST('26:00:03.5' AS TIME(1))", "26:00:03.500000"),
                "clock_negative": ("CAST('-838:59:59' AS TIME)", "-838:59:59"),
                "clock_under_a_second": ("CAST('-00:00:00.5' AS TIME(1))", "-00:00:00.500000"),
                # MariaDB's JSON is text on the wire.
                "doc": ("JSON_OBJECT('a', JSON_ARRAY(1, 2))", json_document({"a": [1, 2]})),
                "doc_column": ("doc", json_document({"a": [1, 2]})),
                # Read from the table: MariaDB turns BIT in a scalar subquery into decimal text.
                "bits": ("bits", 5),
            },
            column_types={
                "integer": "INT",
                "big integer": "BIGINT",
                "decimal": "DECIMAL",
                "date": "DATE",
                "time": "TIME",
                "bits": "BIT",
            },
            types_from="dialect_types",
            unreachable=f"mysql+pymysql://root@{HOST.partition(':')[0]}:9/{DATABASE}",
            refused_credentials=f"mysql+pymysql://root:Wr0ng-s3cret-pw@{HOST}/{DATABASE}",
            password_connection_string=f"mysql+pymysql://{USER}:{urllib.parse.quote(password, safe='')}@{HOST}/{DATABASE}",
            end_session=end_session,
        )

    # -- MySQL's own ----------------------------------------------------------------------------

    def test_zero_dates_stay_text_among_real_dates(self, kit):
        with kit.session() as s:
            out = s.run("SELECT d, dd FROM zero_dates ORDER BY n")
        assert out["rows"] == [
            {"d": "2024-01-02T03:04:05", "dd": "2024-01-02"},
            {"d": "0000-00-00 00:00:00", "dd": "0000-00-00"},
        ]

    def test_time_is_a_clock_reading_in_every_row(self, kit):
        with kit.session() as s:
            out = s.run(
                "SELECT CAST(t AS TIME(6)) AS t FROM (SELECT 1 AS n, '00:00:00' AS t UNION ALL SELECT 2, '23:59:59.000001'"
                " UNION ALL SELECT 3, '100:00:00' UNION ALL SELECT 4, '-01:02:03.25' UNION ALL SELECT 5, NULL) AS x ORDER BY n"
            )
        assert [row["t"] for row in out["rows"]] == ["00:00:00", "23:59:59.000001", "100:00:00", "-01:02:03.250000", None]
        assert out["columns"] == [{"name": "t", "type": "TIME"}]

    def test_positional_parameters_keep_their_order_when_the_canonical_text_reorders_clauses(self, kit):
        # MySQL's LIMIT offset, count is written LIMIT count OFFSET offset in the canonical text.
        with kit.session() as s:
            out = s.run("SELECT n FROM numbers ORDER BY n LIMIT ?, ?", parameters=[1, 2])
        assert out["rows"] == [{"n": 2}, {"n": 3}]

    def test_user_variables_and_named_locks_are_gone_before_the_next_task(self, kit, tmp_path):
        """What only a bypass of the guard could set, read back with the raw driver on the very
        connection the next task runs on, and the lock looked up from another session."""
        url = kit.database.connection_string
        with Runtime(Settings(data_dir=tmp_path)) as runtime:  # tasks on this thread: it keeps one connection
            runtime.run(connection_string=url, query="SELECT 1 AS one")
            source = runtime.resolve(url)
            connection, kept = runtime.pools.checkout(source)
            assert kept, "the thread keeps its connection between tasks: the next task reuses this one"
            with connection.dbapi_connection.cursor() as cursor:
                cursor.execute("SET @kit_v = 42")
                cursor.execute(f"SELECT GET_LOCK('{LOCK_NAME}', 0)")
            runtime.pools.checkin(source, connection, kept)
            with admin() as other, other.cursor() as cursor:
                cursor.execute(f"SELECT IS_USED_LOCK('{LOCK_NAME}') IS NOT NULL")
                assert cursor.fetchone() == (1,)
            runtime.run(connection_string=url, query="SELECT 1 AS one")  # the next task
            with admin() as other, other.cursor() as cursor:
                cursor.execute(f"SELECT IS_USED_LOCK('{LOCK_NAME}')")
                assert cursor.fetchone() == (None,), "the named lock outlived the task that took it"
            again, kept = runtime.pools.checkout(source)
            assert again is connection
            with again.dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT @kit_v, @@session.autocommit")
                assert cursor.fetchone() == (None, 1), "a user variable reached the next task"
            runtime.pools.checkin(source, again, kept)
