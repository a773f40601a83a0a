"""Error rules: every dialect's rules reached by real errors, and the one message format.

Each case below makes a real error, from a real SQLite or DuckDB file or a real MariaDB or
PostgreSQL server, and names the rule of its dialect that must take it: the first that
matches, so a reordered or widened rule shows up here. Every rule of every dialect is reached
by some case, except those listed in UNREACHED with the reason. No driver is mocked.

Then: messages read `<dialect>: <driver message> (<code>); <hint>`, a dialect's own message
may carry a secret but what run_query reports never does (the core redacts), and a dialect
that only declares rules (no classify of its own) gets its errors classified the same way.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from servers import MYSQL_HOST, POSTGRESQL_HOST, mysql_admin, postgresql_admin

from sqladapter import (
    ConnectionConfigError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    Dialect,
    LockTimeoutError,
    NotReadOnlyError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    Runtime,
    SqlAdapterError,
    error_rules,
    hookimpl,
    plugins,
    run_query,
)
from sqladapter.default_plugins.sqlite import SQLite
from sqladapter.error_rules import ErrorRule

SECRET = "Hunter2-s3cret"
MISSING = "sqla_rules_no_such"  # a prefix for names that exist nowhere


def caught(make: Callable[[], Any]) -> BaseException:
    """The exception `make` raises; fails the test if it raises none."""
    try:
        make()
    except Exception as exc:
        return exc
    raise AssertionError(f"{make} raised nothing")


def first_rule(dialect: Dialect, exc: BaseException) -> int | None:
    """The index of the dialect's first rule that matches `exc` (None: none does)."""
    if dialect.driver_errors and not error_rules.is_instance(exc, dialect.driver_errors):
        return None
    code, text = dialect.error_code(exc), dialect.error_text(exc) or type(exc).__name__
    return next((i for i, rule in enumerate(dialect.error_rules) if rule.matches(exc, code, text)), None)


_open_connections: list[Any] = []


def _opened(connection: Any) -> Any:
    _open_connections.append(connection)
    return connection


@pytest.fixture(autouse=True)
def _close_server_connections():
    yield
    while _open_connections:
        connection = _open_connections.pop()
        try:
            connection.close()
        except Exception:
            pass


@dataclass(frozen=True)
class Case:
    rule: int  # index in the dialect's error_rules
    error: type[SqlAdapterError]
    make: Callable[[Any], BaseException]  # given the dialect's fixture, the real exception


def check(dialect: Dialect, case: Case, exc: BaseException) -> SqlAdapterError:
    """`exc` is taken by the case's rule, and becomes the case's error with the message format."""
    assert first_rule(dialect, exc) == case.rule, f"{type(exc).__name__}: {exc}"
    error = dialect.classify(exc)
    assert type(error) is case.error, f"{type(error).__name__}: {error and error.message}"
    rule = dialect.error_rules[case.rule]
    code = dialect.error_code(exc)
    assert error.code == (None if code is None else str(code))
    first_line = (dialect.error_text(exc) or type(exc).__name__).split("\n", 1)[0].rstrip()
    expected = f"{dialect.name}: {first_line}" + (f" ({code})" if code is not None else "") + (f"; {rule.hint}" if rule.hint else "")
    assert error.message.split("\n", 1)[0] == expected
    return error


def test_every_rule_of_every_dialect_has_a_case_or_a_reason():
    for dialect, cases in DIALECT_CASES.items():
        reached = {case.rule for case in cases.values()}
        unreached = set(UNREACHED.get(dialect.name, {}))
        assert reached.isdisjoint(unreached), dialect.name
        assert reached | unreached == set(range(len(dialect.error_rules))), dialect.name


# -- SQLite: a real file ----------------------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (i INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    return path


def _sqlite_interrupted(path: Path) -> BaseException:
    conn = sqlite3.connect(path)
    conn.set_progress_handler(lambda: 1, 100)
    return caught(lambda: conn.execute("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r").fetchall())


def _sqlite_read_only(path: Path) -> BaseException:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return caught(lambda: conn.execute("INSERT INTO t VALUES (2)"))


def _sqlite_not_authorized(path: Path) -> BaseException:
    conn = sqlite3.connect(path)
    conn.set_authorizer(lambda *_: sqlite3.SQLITE_DENY)
    return caught(lambda: conn.execute("SELECT * FROM t"))


def _sqlite_busy(path: Path) -> BaseException:
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        return caught(lambda: sqlite3.connect(path, timeout=0).execute("SELECT * FROM t").fetchall())
    finally:
        writer.execute("ROLLBACK")


def _sqlite_shared_cache_locked(path: Path) -> BaseException:
    # An extended code (SQLITE_LOCKED_SHAREDCACHE): the code rule misses it, the message rule does not.
    uri = f"file:{path}?cache=shared"
    writer = sqlite3.connect(uri, uri=True, isolation_level=None)
    writer.execute("BEGIN")
    writer.execute("INSERT INTO t VALUES (3)")
    try:
        return caught(lambda: sqlite3.connect(uri, uri=True).execute("SELECT * FROM t").fetchall())
    finally:
        writer.execute("ROLLBACK")


def _sqlite_cannot_open(path: Path) -> BaseException:
    return caught(lambda: sqlite3.connect(f"file:{path.parent / 'missing.db'}?mode=ro", uri=True))


def _sqlite_not_a_database(path: Path) -> BaseException:
    junk = path.parent / "junk.db"
    junk.write_bytes(b"not a database, " * 512)
    return caught(lambda: sqlite3.connect(junk).execute("SELECT * FROM sqlite_master"))


def _sqlite_two_statements(path: Path) -> BaseException:
    return caught(lambda: sqlite3.connect(path).execute("SELECT 1; SELECT 2"))


def _sqlite_no_such_table(path: Path) -> BaseException:
    return caught(lambda: sqlite3.connect(path).execute(f"SELECT * FROM {MISSING}_table"))


def _sqlite_unique(path: Path) -> BaseException:
    conn = sqlite3.connect(path)
    conn.execute("CREATE UNIQUE INDEX t_i ON t (i)")
    return caught(lambda: conn.execute("INSERT INTO t VALUES (1)"))


SQLITE_CASES = {
    "interrupted": Case(0, QueryTimeoutError, _sqlite_interrupted),
    "read-only file": Case(1, PermissionDeniedError, _sqlite_read_only),
    "authorizer": Case(1, PermissionDeniedError, _sqlite_not_authorized),
    "busy": Case(2, LockTimeoutError, _sqlite_busy),
    "shared cache locked": Case(3, LockTimeoutError, _sqlite_shared_cache_locked),
    "cannot open": Case(4, DatabaseUnavailableError, _sqlite_cannot_open),
    "not a database": Case(6, QueryError, _sqlite_not_a_database),
    "two statements": Case(7, NotReadOnlyError, _sqlite_two_statements),
    "no such table": Case(9, QueryError, _sqlite_no_such_table),
    "unique constraint": Case(8, ConstraintViolationError, _sqlite_unique),
}


@pytest.mark.parametrize("name", list(SQLITE_CASES))
def test_sqlite_rule(name, sqlite_file):
    case = SQLITE_CASES[name]
    check(SQLite(), case, case.make(sqlite_file))


# -- DuckDB: a real file ----------------------------------------------------------------------------

def _duckdb():
    return pytest.importorskip("duckdb")


def _duckdb_dialect() -> Dialect:
    return pytest.importorskip("sqladapter_duckdb").DuckDB()


@pytest.fixture
def duckdb_file(tmp_path: Path) -> Path:
    duck = _duckdb()
    path = tmp_path / "rules.duckdb"
    conn = duck.connect(str(path))
    conn.execute("CREATE TABLE t (i INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    return path


def _duckdb_read_only(path: Path) -> Any:
    from sqladapter_duckdb import READ_ONLY_CONFIG

    return _duckdb().connect(str(path), read_only=True, config=dict(READ_ONLY_CONFIG))


def _duckdb_interrupted(path: Path) -> BaseException:
    conn = _duckdb().connect(":memory:")
    timer = threading.Timer(0.2, conn.interrupt)
    timer.start()
    try:
        return caught(lambda: conn.execute("SELECT count(*) FROM range(100000000000)").fetchall())
    finally:
        timer.cancel()


def _duckdb_no_files(path: Path) -> BaseException:
    return caught(lambda: _duckdb_read_only(path).execute("SELECT * FROM read_csv('/etc/hosts')"))


def _duckdb_read_only_mode(path: Path) -> BaseException:
    return caught(lambda: _duckdb_read_only(path).execute("CREATE TABLE u (i INTEGER)"))


def _duckdb_locked_configuration(path: Path) -> BaseException:
    return caught(lambda: _duckdb_read_only(path).execute("SET threads = 1"))


def _duckdb_conflict(path: Path) -> BaseException:
    conn = _duckdb().connect(str(path))
    first, second = conn.cursor(), conn.cursor()
    first.execute("BEGIN")
    second.execute("BEGIN")
    first.execute("UPDATE t SET i = 2")
    try:
        return caught(lambda: second.execute("UPDATE t SET i = 3"))
    finally:
        first.execute("ROLLBACK")
        conn.close()


def _duckdb_not_a_database(path: Path) -> BaseException:
    junk = path.parent / "junk.duckdb"
    junk.write_bytes(b"not a database, " * 1024)
    return caught(lambda: _duckdb().connect(str(junk), read_only=True))


def _duckdb_closed(path: Path) -> BaseException:
    conn = _duckdb().connect(":memory:")
    conn.close()
    return caught(lambda: conn.execute("SELECT 1"))


def _duckdb_out_of_memory(path: Path) -> BaseException:
    conn = _duckdb().connect(":memory:")
    conn.execute("SET memory_limit = '20MB'")
    conn.execute("SET threads = 1")
    return caught(lambda: conn.execute("SELECT list(range) FROM range(50000000)").fetchall())


def _duckdb_no_such_table(path: Path) -> BaseException:
    return caught(lambda: _duckdb_read_only(path).execute(f"SELECT * FROM {MISSING}_table"))


def _duckdb_primary_key(path: Path) -> BaseException:
    conn = _duckdb().connect(":memory:")
    conn.execute("CREATE TABLE k (i INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO k VALUES (1)")
    return caught(lambda: conn.execute("INSERT INTO k VALUES (1)"))


DUCKDB_CASES = {
    "interrupted": Case(0, QueryTimeoutError, _duckdb_interrupted),
    "no files": Case(1, PermissionDeniedError, _duckdb_no_files),
    "read-only mode": Case(2, PermissionDeniedError, _duckdb_read_only_mode),
    "locked configuration": Case(2, PermissionDeniedError, _duckdb_locked_configuration),
    "write conflict": Case(3, LockTimeoutError, _duckdb_conflict),
    "not a database": Case(5, DatabaseUnavailableError, _duckdb_not_a_database),
    "closed connection": Case(5, DatabaseUnavailableError, _duckdb_closed),
    "out of memory": Case(6, QueryError, _duckdb_out_of_memory),
    "no such table": Case(7, QueryError, _duckdb_no_such_table),
    "primary key": Case(4, ConstraintViolationError, _duckdb_primary_key),
}


@pytest.mark.parametrize("name", list(DUCKDB_CASES))
def test_duckdb_rule(name, duckdb_file):
    case = DUCKDB_CASES[name]
    check(_duckdb_dialect(), case, case.make(duckdb_file))


# -- MariaDB / MySQL: the real server ---------------------------------------------------------------

MYSQL_TABLE = "sqla_rules_locks"


def _pymysql():
    return pytest.importorskip("pymysql")


def _mysql_dialect() -> Dialect:
    return pytest.importorskip("sqladapter_mysql").MySQL()


def _mysql(**options: Any) -> Any:
    host, _, port = MYSQL_HOST.partition(":")
    settings = {"host": host, "port": int(port or 3306), "user": "root", "database": "sqla_dialects"}
    settings.update(options)
    return _opened(_pymysql().connect(autocommit=True, connect_timeout=5, **settings))


@pytest.fixture
def mysql_server(mysql_url):
    with mysql_admin("sqla_dialects") as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {MYSQL_TABLE} (id INT PRIMARY KEY) ENGINE=InnoDB")
        cursor.execute(f"INSERT IGNORE INTO {MYSQL_TABLE} VALUES (1)")
    yield
    with mysql_admin("sqla_dialects") as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {MYSQL_TABLE}")


def _mysql_wrong_password(_: Any) -> BaseException:
    return caught(lambda: _mysql(password=SECRET))


def _mysql_read_only(_: Any) -> BaseException:
    conn = _mysql()
    with conn.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        return caught(lambda: cursor.execute(f"CREATE TABLE {MISSING}_table (i INT)"))


def _mysql_time_limit(_: Any) -> BaseException:
    conn = _mysql()
    if "mariadb" not in conn.get_server_info().lower():
        pytest.skip("the statement below uses MariaDB's max_statement_time")
    heavy = "SELECT sum(a.seq * b.seq) FROM seq_1_to_100000 a, seq_1_to_100000 b"
    with conn.cursor() as cursor:
        return caught(lambda: cursor.execute(f"SET STATEMENT max_statement_time = 0.01 FOR {heavy}"))


def _mysql_lock_wait(_: Any) -> BaseException:
    holder, waiter = _mysql(), _mysql()
    try:
        with holder.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT id FROM {MYSQL_TABLE} WHERE id = 1 FOR UPDATE")
        with waiter.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
            return caught(lambda: cursor.execute(f"UPDATE {MYSQL_TABLE} SET id = 1 WHERE id = 1"))
    finally:
        holder.rollback()
        holder.close()
        waiter.close()


def _mysql_unknown_database(_: Any) -> BaseException:
    return caught(lambda: _mysql(database=f"{MISSING}_database"))


def _mysql_refused(_: Any) -> BaseException:
    return caught(lambda: _mysql(port=1))


def _mysql_closed(_: Any) -> BaseException:
    conn = _mysql()
    conn.close()
    return caught(lambda: conn.cursor().execute("SELECT 1"))


def _mysql_tls_refused(_: Any) -> BaseException:
    # TLS asked for against a server without it: the same URL fails the same way every time.
    return caught(lambda: _mysql(ssl={"check_hostname": False}, ssl_verify_cert=False))


def _mysql_bad_operand_types(_: Any) -> BaseException:
    # A server's own query error numbered past the client range (MariaDB 4078, MySQL 3xxx).
    with _mysql().cursor() as cursor:
        return caught(lambda: cursor.execute("SELECT 1 + POINT(1, 1)"))


def _mysql_no_such_table(_: Any) -> BaseException:
    with _mysql().cursor() as cursor:
        return caught(lambda: cursor.execute(f"SELECT * FROM {MISSING}_table"))


def _mysql_duplicate_key(_: Any) -> BaseException:
    with _mysql().cursor() as cursor:
        return caught(lambda: cursor.execute(f"INSERT INTO {MYSQL_TABLE} VALUES (1)"))


MYSQL_CASES = {
    "wrong password": Case(0, PermissionDeniedError, _mysql_wrong_password),
    "read-only transaction": Case(1, PermissionDeniedError, _mysql_read_only),
    "time limit": Case(2, QueryTimeoutError, _mysql_time_limit),
    "lock wait": Case(3, LockTimeoutError, _mysql_lock_wait),
    "unknown database": Case(5, ConnectionConfigError, _mysql_unknown_database),
    "connection refused": Case(6, DatabaseUnavailableError, _mysql_refused),
    "closed connection": Case(7, DatabaseUnavailableError, _mysql_closed),
    "TLS refused": Case(8, ConnectionConfigError, _mysql_tls_refused),
    "no such table": Case(10, QueryError, _mysql_no_such_table),
    "operand types past the client range": Case(10, QueryError, _mysql_bad_operand_types),
    "duplicate key": Case(4, ConstraintViolationError, _mysql_duplicate_key),
}


@pytest.mark.servers
@pytest.mark.parametrize("name", list(MYSQL_CASES))
def test_mysql_rule(name, mysql_server):
    case = MYSQL_CASES[name]
    error = check(_mysql_dialect(), case, case.make(None))
    if name == "wrong password":
        assert SECRET not in error.message


# -- PostgreSQL: the real server --------------------------------------------------------------------

POSTGRESQL_TABLE = "sqla_rules_rows"


def _psycopg():
    return pytest.importorskip("psycopg")


def _postgresql_dialect() -> Dialect:
    return pytest.importorskip("sqladapter_postgresql").PostgreSQL()


def _postgresql(autocommit: bool = True, **options: Any) -> Any:
    host, _, port = POSTGRESQL_HOST.partition(":")
    settings: dict[str, Any] = {"host": host, "port": port or "5432", "user": "postgres", "dbname": "sqla_dialects"}
    settings.update(options)
    return _opened(_psycopg().connect(autocommit=autocommit, connect_timeout=5, **settings))


@pytest.fixture
def postgresql_server(postgresql_url):
    with postgresql_admin("sqla_dialects") as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {POSTGRESQL_TABLE} (id int PRIMARY KEY, v int)")
        conn.execute(f"INSERT INTO {POSTGRESQL_TABLE} VALUES (1, 0) ON CONFLICT DO NOTHING")
    yield
    with postgresql_admin("sqla_dialects") as conn:
        conn.execute(f"DROP TABLE IF EXISTS {POSTGRESQL_TABLE}")


def _pg_statement_timeout(_: Any) -> BaseException:
    conn = _postgresql()
    conn.execute("SET statement_timeout = 50")
    return caught(lambda: conn.execute("SELECT pg_sleep(5)"))


def _pg_read_only(_: Any) -> BaseException:
    conn = _postgresql()
    conn.execute("SET default_transaction_read_only = on")
    return caught(lambda: conn.execute(f"CREATE TABLE {MISSING}_table (i int)"))


def _pg_no_grant(_: Any) -> BaseException:
    conn = _postgresql()
    conn.execute("SET ROLE pg_monitor")
    return caught(lambda: conn.execute("SELECT * FROM pg_authid"))


def _pg_unknown_database_in_a_query(_: Any) -> BaseException:
    return caught(lambda: _postgresql().execute(f"SELECT pg_database_size('{MISSING}_database')"))


def _pg_serialization_failure(_: Any) -> BaseException:
    reader, writer = _postgresql(autocommit=False), _postgresql()
    try:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute(f"SELECT v FROM {POSTGRESQL_TABLE} WHERE id = 1").fetchall()
        writer.execute(f"UPDATE {POSTGRESQL_TABLE} SET v = v + 1 WHERE id = 1")
        return caught(lambda: reader.execute(f"UPDATE {POSTGRESQL_TABLE} SET v = v + 1 WHERE id = 1"))
    finally:
        reader.close()
        writer.close()


def _pg_lock_timeout(_: Any) -> BaseException:
    # A row lock, never an advisory one: other suites count those on this server.
    holder, waiter = _postgresql(autocommit=False), _postgresql()
    try:
        holder.execute(f"SELECT v FROM {POSTGRESQL_TABLE} WHERE id = 1 FOR UPDATE").fetchall()
        waiter.execute("SET lock_timeout = 50")
        return caught(lambda: waiter.execute(f"UPDATE {POSTGRESQL_TABLE} SET v = v + 1 WHERE id = 1"))
    finally:
        holder.close()
        waiter.close()


def _pg_terminated(_: Any) -> BaseException:
    victim = _postgresql()
    pid = victim.info.backend_pid

    def terminate() -> None:
        with _postgresql() as admin:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
                if row and row[0] == "active":
                    break
                time.sleep(0.02)
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    thread = threading.Thread(target=terminate)
    thread.start()
    try:
        return caught(lambda: victim.execute("SELECT pg_sleep(10)"))
    finally:
        thread.join(15)


def _pg_tls_required(_: Any) -> BaseException:
    # Without TLS on the server: "server does not support SSL"; with it: no such root certificate.
    return caught(lambda: _postgresql(sslmode="verify-full", sslrootcert=f"/{MISSING}/root.crt"))


def _pg_unreadable_option(_: Any) -> BaseException:
    return caught(lambda: _postgresql(port="not-a-port"))


def _pg_unknown_database(_: Any) -> BaseException:
    return caught(lambda: _postgresql(dbname=f"{MISSING}_database"))


def _pg_unknown_role(_: Any) -> BaseException:
    return caught(lambda: _postgresql(user=f"{MISSING}_role"))


def _pg_refused(_: Any) -> BaseException:
    return caught(lambda: _postgresql(port="1"))


def _pg_closed_cursor(_: Any) -> BaseException:
    cursor = _postgresql().cursor()
    cursor.close()
    return caught(lambda: cursor.execute("SELECT 1"))


def _pg_no_such_table(_: Any) -> BaseException:
    return caught(lambda: _postgresql().execute(f"SELECT * FROM {MISSING}_table"))


def _pg_unknown_setting_in_a_query(_: Any) -> BaseException:
    # The words of a connection option refused at connect time, but with a SQLSTATE: a query error.
    return caught(lambda: _postgresql().execute("SELECT current_setting('sqla_rules.no_such')"))


def _pg_unique_violation(_: Any) -> BaseException:
    return caught(lambda: _postgresql().execute(f"INSERT INTO {POSTGRESQL_TABLE} VALUES (1, 0)"))


POSTGRESQL_CASES = {
    "statement timeout": Case(0, QueryTimeoutError, _pg_statement_timeout),
    "read-only transaction": Case(1, PermissionDeniedError, _pg_read_only),
    "no grant": Case(2, PermissionDeniedError, _pg_no_grant),
    "unknown database in a query": Case(3, ConnectionConfigError, _pg_unknown_database_in_a_query),
    "serialization failure": Case(4, LockTimeoutError, _pg_serialization_failure),
    "lock timeout": Case(4, LockTimeoutError, _pg_lock_timeout),
    "session terminated": Case(6, DatabaseUnavailableError, _pg_terminated),
    "TLS required": Case(7, ConnectionConfigError, _pg_tls_required),
    "unreadable option": Case(7, ConnectionConfigError, _pg_unreadable_option),
    "unknown database": Case(8, ConnectionConfigError, _pg_unknown_database),
    "unknown role": Case(9, PermissionDeniedError, _pg_unknown_role),
    "connection refused": Case(10, DatabaseUnavailableError, _pg_refused),
    "closed cursor": Case(11, DatabaseUnavailableError, _pg_closed_cursor),
    "no such table": Case(12, QueryError, _pg_no_such_table),
    "unknown setting in a query": Case(12, QueryError, _pg_unknown_setting_in_a_query),
    "unique violation": Case(5, ConstraintViolationError, _pg_unique_violation),
}


@pytest.mark.servers
@pytest.mark.parametrize("name", list(POSTGRESQL_CASES))
def test_postgresql_rule(name, postgresql_server):
    case = POSTGRESQL_CASES[name]
    check(_postgresql_dialect(), case, case.make(None))


def _plugin_dialect(module: str, cls: str) -> Dialect | None:
    try:
        return getattr(__import__(module), cls)()
    except ImportError:
        return None


DIALECT_CASES = {
    dialect: cases
    for dialect, cases in (
        (SQLite(), SQLITE_CASES),
        (_plugin_dialect("sqladapter_duckdb", "DuckDB"), DUCKDB_CASES),
        (_plugin_dialect("sqladapter_mysql", "MySQL"), MYSQL_CASES),
        (_plugin_dialect("sqladapter_postgresql", "PostgreSQL"), POSTGRESQL_CASES),
    )
    if dialect is not None
}
# Rules no real error here reaches first, by dialect name and rule index.
UNREACHED = {
    # Every "unable to open" SQLite gives carries SQLITE_CANTOPEN, which the rule before takes.
    "sqlite": {5: "an 'unable to open' without SQLITE_CANTOPEN"},
    # Client errors (2xxx) not listed before: none can be made on purpose against a live server.
    "mysql": {9: "2xxx client errors outside _UNAVAILABLE"},
}


# -- secrets: the dialect's message may carry one, run_query's never does ------------------------


def test_sqlite_and_duckdb_errors_never_report_a_password_in_a_url(data_dir):
    duck = _duckdb()
    with sqlite3.connect(data_dir / "rules.db") as conn:
        conn.execute("CREATE TABLE t (i INTEGER)")
    conn.close()
    duck.connect(str(data_dir / "rules.duckdb")).close()
    table = f'"postgresql://reader:{SECRET}@db.example/sales"'
    for connection_string in ("rules.db", "rules.duckdb"):
        with pytest.raises(QueryError) as raised:
            run_query(connection_string=connection_string, query=f"SELECT * FROM {table}")
        error = raised.value
        assert SECRET not in error.message and SECRET not in str(error) and SECRET not in repr(error.to_dict())
        assert "postgresql://reader:***@db.example/sales" in error.message
        assert error.message.startswith(("sqlite: ", "duckdb: "))


def test_the_dialect_leaves_redaction_to_the_core(sqlite_file):
    # A dialect's classify quotes the driver as it is; run_query's _classify takes secrets out once.
    exc = caught(lambda: sqlite3.connect(sqlite_file).execute(f'SELECT * FROM "mysql://u:{SECRET}@h"'))
    assert SECRET in SQLite().classify(exc).message


@pytest.mark.servers
def test_mysql_errors_never_report_a_password_in_a_url(mysql_url):
    with pytest.raises(QueryError) as raised:
        run_query(connection_string=mysql_url, query=f"SELECT * FROM `mysql://reader:{SECRET}@db.example`")
    assert SECRET not in raised.value.message and "mysql://reader:***@db.example" in raised.value.message
    assert raised.value.message.startswith("mysql: ") and raised.value.code == "1146"


@pytest.mark.servers
def test_postgresql_errors_never_report_the_connection_password(postgresql_url, monkeypatch):
    # The server here trusts every password, so this one connects; the query names it twice
    # (in the message and in the LINE 1 the server quotes back).
    base = postgresql_url.split("://", 1)[1].split("@", 1)[1]
    monkeypatch.setenv("SQLADAPTER_CONNECTION_RULES_SECRET", f"postgresql://postgres:{SECRET}@{base}")
    with pytest.raises(QueryError) as raised:
        run_query(connection="rules_secret", query=f'SELECT * FROM "{SECRET}"')
    error = raised.value
    assert SECRET not in error.message and SECRET not in str(error)
    assert error.message.startswith('postgresql: relation "***" does not exist (42P01)')
    assert error.code == "42P01"


# -- the format ---------------------------------------------------------------------------------------


def test_the_message_puts_code_and_hint_on_the_first_line():
    assert error_rules.message("duckdb", "Binder Error: no column x\n\nLINE 1: SELECT x\n               ^", "BinderException", "a hint") == (
        "duckdb: Binder Error: no column x (BinderException); a hint\n\nLINE 1: SELECT x\n               ^"
    )
    assert error_rules.message("mysql", "Unknown database 'x'", 1049) == "mysql: Unknown database 'x' (1049)"
    assert error_rules.message("postgresql", "connection refused", None, "") == "postgresql: connection refused"


@pytest.mark.servers
def test_an_error_without_a_message_is_named_by_its_class(mysql_url):
    # PyMySQL's InterfaceError(0, '') for a closed connection says nothing of its own.
    error = _mysql_dialect().classify(_mysql_closed(None))
    assert error.message == "mysql: InterfaceError (0)"
    assert type(error) is DatabaseUnavailableError


# -- ErrorRule itself ---------------------------------------------------------------------------------


def _no_such_table() -> sqlite3.OperationalError:
    exc = caught(lambda: sqlite3.connect(":memory:").execute(f"SELECT * FROM {MISSING}_table"))
    assert isinstance(exc, sqlite3.OperationalError)
    return exc


def test_a_rule_matches_only_when_every_given_test_passes():
    exc = _no_such_table()
    code, text = "SQLITE_ERROR", str(exc)
    assert ErrorRule(QueryError).matches(exc, code, text)
    assert ErrorRule(QueryError, types=(sqlite3.OperationalError,), codes=("SQLITE_ERROR",), phrases=("NO SUCH",)).matches(exc, code, text)
    assert not ErrorRule(QueryError, types=(sqlite3.OperationalError,), codes=("SQLITE_BUSY",)).matches(exc, code, text)
    assert not ErrorRule(QueryError, types=(sqlite3.IntegrityError,), phrases=("no such",)).matches(exc, code, text)
    # Within one test any value passes; codes and code_prefixes are one test, phrases and pattern another.
    assert ErrorRule(QueryError, codes=("SQLITE_BUSY",), code_prefixes=("SQLITE_E",)).matches(exc, code, text)
    assert ErrorRule(QueryError, phrases=("locked",), pattern=r"no such \w+:").matches(exc, code, text)
    assert not ErrorRule(QueryError, pattern=r"^such").matches(exc, code, text)


def test_types_may_be_given_by_name_for_a_driver_the_core_cannot_import():
    exc = _no_such_table()
    assert error_rules.is_instance(exc, ("OperationalError",))
    assert error_rules.is_instance(exc, ("DatabaseError",))  # a base class's name, as isinstance
    assert error_rules.is_instance(exc, ("sqlite3.Error",))
    assert not error_rules.is_instance(exc, ("IntegrityError", "psycopg.Error"))


def test_none_among_the_codes_stands_for_an_error_without_one():
    exc = _no_such_table()
    rule = ErrorRule(DatabaseUnavailableError, codes=(None,))
    assert rule.matches(exc, None, "x") and not rule.matches(exc, "SQLITE_ERROR", "x")


def test_a_range_of_codes_holds_numbers_only_and_is_never_scanned():
    exc = _no_such_table()
    rule = ErrorRule(DatabaseUnavailableError, codes=range(2000, 1 << 62))
    started = time.perf_counter()
    assert rule.matches(exc, 2003, "x") and not rule.matches(exc, 1999, "x")
    assert not rule.matches(exc, None, "x") and not rule.matches(exc, "2003", "x")
    assert time.perf_counter() - started < 0.5


def test_a_single_value_where_a_tuple_is_meant_is_taken_as_one():
    rule = ErrorRule(QueryError, types=sqlite3.Error, codes="SQLITE_BUSY", phrases="Locked", code_prefixes="08")
    assert rule.types == (sqlite3.Error,) and rule.codes == ("SQLITE_BUSY",)
    assert rule.phrases == ("locked",) and rule.code_prefixes == ("08",)


@pytest.mark.parametrize(
    "arguments",
    [
        {"error": ValueError},
        {"error": QueryError, "hint": None},
        {"error": QueryError, "types": (42,)},
        {"error": QueryError, "phrases": (b"locked",)},
    ],
)
def test_a_malformed_rule_fails_when_the_plugin_is_imported(arguments):
    with pytest.raises(TypeError):
        ErrorRule(**arguments)


# -- a third-party dialect: rules only, no classify --------------------------------------------------


class Ledger(Dialect):
    """SQLite files ending in .ledger, through the plain Dialect: no classify, only rules, and
    the driver's exception given by name, as a plugin whose driver the core lacks would."""

    name = "ledger"
    backends = ("ledger",)
    drivername = "sqlite+pysqlite"
    extensions = (".ledger",)
    grammar = "sqlite"
    driver_errors = ("sqlite3.Error",)
    error_rules = (
        ErrorRule(QueryError, "the ledger has the tables accounts and entries", phrases=("no such table",)),
        ErrorRule(NotReadOnlyError, "send exactly one statement", types=("ProgrammingError",), codes=(None,)),
        ErrorRule(QueryError),
    )

    def error_code(self, exc):
        return getattr(exc, "sqlite_errorname", None)


class Bare(Ledger):
    """The same database with no rules at all: the core's PEP 249 defaults decide."""

    name = "bare"
    backends = ("bare",)
    extensions = (".bare",)
    driver_errors = ()
    error_rules = ()


@pytest.fixture
def ledger(data_dir):
    with sqlite3.connect(data_dir / "books.ledger") as conn:
        conn.execute("CREATE TABLE accounts (name TEXT)")
    conn.close()
    (data_dir / "books.bare").write_bytes((data_dir / "books.ledger").read_bytes())
    module = types.ModuleType("sqladapter_ledger_test")

    @hookimpl
    def sqladapter_register_dialects(register):
        register(Ledger())
        register(Bare())

    module.sqladapter_register_dialects = sqladapter_register_dialects
    pm = plugins.get_plugin_manager()
    pm.register(module, name="ledger")
    with Runtime(plugin_manager=pm) as runtime:
        yield runtime


def test_a_dialect_with_only_rules_gets_its_errors_classified_and_written_by_the_core(ledger):
    assert "classify" not in vars(Ledger) and Ledger.classify is Dialect.classify
    with pytest.raises(QueryError) as raised:
        ledger.run(connection_string="books.ledger", query="SELECT * FROM entries")
    assert raised.value.message == "ledger: no such table: entries (SQLITE_ERROR); the ledger has the tables accounts and entries"
    assert raised.value.code == "SQLITE_ERROR" and raised.value.retryable is False
    with pytest.raises(QueryError) as raised:
        ledger.run(connection_string="books.ledger", query="SELECT nope FROM accounts")
    assert raised.value.message == "ledger: no such column: nope (SQLITE_ERROR)"
    # The rule by type name and missing code, on a real ProgrammingError of the driver.
    error = Ledger().classify(caught(lambda: sqlite3.connect(":memory:").execute("SELECT 1; SELECT 2")))
    assert type(error) is NotReadOnlyError and error.code is None
    # Not the driver's: left to the core.
    assert Ledger().classify(ValueError("not sqlite's")) is None


def test_a_dialect_without_rules_gets_the_core_pep_249_defaults(ledger):
    # sqlite3 raises OperationalError for a missing table, which PEP 249 counts as the
    # database's trouble: why SQLite's own rules say otherwise.
    with pytest.raises(DatabaseUnavailableError) as raised:
        ledger.run(connection_string="books.bare", query="SELECT * FROM entries")
    assert raised.value.message == "bare: OperationalError: no such table: entries"
    assert raised.value.retryable is True and raised.value.code is None
    assert type(error_rules.classify_by_default("bare", PermissionError("denied"))) is PermissionDeniedError
    assert type(error_rules.classify_by_default("bare", ValueError("bad"))) is QueryError
    assert type(error_rules.classify_by_default("bare", KeyboardInterrupt())) is SqlAdapterError
