"""MySQL 8 and MariaDB for sqladapter, through PyMySQL: `mysql://`, `mysql+pymysql://`, `mariadb://`.

The server has no parser a Python library wraps, so queries are checked by sqlglot's MySQL
grammar against the curated FUNCTIONS, and the server runs sqlglot's canonical text of them.
Before every query one SET statement makes the session read-only again (so the server refuses
writes whatever the parser let through), pins the settings that decide how that text is lexed
(sql_mode, character sets), and sets this task's time limit (`max_execution_time` on MySQL,
`max_statement_time` on MariaDB, with the client's socket read timeout as a backstop) and
`sql_select_limit`, which keeps the server from sending more rows than the task can use.
Inline URLs carry no options: only named connections configure the driver.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any, Callable, Iterator

import pymysql
from pymysql.constants import COMMAND, FIELD_TYPE
from pymysql.cursors import SSCursor

from sqladapter import (
    BulkLoader,
    ConnectionConfigError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    Dialect,
    LockTimeoutError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    hookimpl,
    jsontypes,
)
from sqladapter.error_rules import CONNECTION_OPTION, CONSTRAINT, CREDENTIALS, DATABASE_NAME, READ_ONLY, TIME_LIMIT, ErrorRule

# The functions a query may call. MySQL and MariaDB keep no catalog of their built-in functions
# that says which have side effects, so this list is curated: string, number, date, JSON,
# aggregate, window and information functions that only compute from their arguments, the
# rows read, the clock or the random generator. Left out on purpose: LOAD_FILE (reads server
# files), GET_LOCK and the other named-lock functions (locks that outlive the query),
# LAST_INSERT_ID, FOUND_ROWS and ROW_COUNT (state left by an earlier statement, which may be
# another workflow's), sequences (NEXTVAL, SETVAL, LASTVAL), replication waits, and anything an
# installed plugin or user added. IS_FREE_LOCK and IS_USED_LOCK only look; SLEEP and BENCHMARK
# stay, because the time limit stops them.
FUNCTIONS = frozenset(
    """
    ascii bin bit_length char char_length character_length chr concat concat_ws elt export_set field
    find_in_set format from_base64 to_base64 hex unhex insert instr lcase lower left length lengthb
    octet_length locate position lpad rpad ltrim rtrim trim make_set mid substr substring
    substring_index oct ord quote repeat replace reverse right space strcmp ucase upper soundex
    weight_string regexp_replace regexp_substr regexp_instr regexp_like natural_sort_key sformat
    abs acos asin atan atan2 ceil ceiling conv cos cot crc32 crc32c degrees exp floor greatest least
    ln log log10 log2 mod pi pow power radians rand round sign sin sqrt tan truncate
    adddate addtime add_months convert_tz curdate current_date current_time current_timestamp curtime
    date date_add date_format date_sub datediff day dayname dayofmonth dayofweek dayofyear extract
    from_days from_unixtime get_format hour last_day localtime localtimestamp makedate maketime
    microsecond minute month monthname now period_add period_diff quarter sec_to_time second
    str_to_date subdate subtime sysdate time time_format time_to_sec timediff timestamp timestampadd
    timestampdiff to_days to_seconds unix_timestamp utc_date utc_time utc_timestamp week weekday
    weekofyear year yearweek
    avg bit_and bit_or bit_xor count group_concat json_arrayagg json_objectagg max min std stddev
    stddev_pop stddev_samp sum var_pop var_samp variance percentile_cont percentile_disc median
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    if ifnull nullif coalesce isnull nvl nvl2 interval cast convert binary
    json_array json_array_append json_array_insert json_contains json_contains_path json_depth
    json_extract json_insert json_keys json_length json_merge json_merge_patch json_merge_preserve
    json_object json_overlaps json_pretty json_quote json_remove json_replace json_schema_valid
    json_search json_set json_type json_unquote json_valid json_value json_query json_exists
    json_compact json_detailed json_loose json_normalize json_equals json_array_intersect
    json_object_filter_keys json_object_to_array json_key_value json_table
    charset coercibility collation connection_id current_user database schema user session_user
    system_user version current_role
    md5 sha sha1 sha2 compress uncompress uncompressed_length random_bytes aes_encrypt aes_decrypt
    uuid uuid_short sys_guid inet_aton inet_ntoa inet6_aton inet6_ntoa is_ipv4 is_ipv6
    is_ipv4_compat is_ipv4_mapped is_uuid column_get column_json column_list column_exists
    column_check st_astext st_aswkt st_geomfromtext st_x st_y st_distance st_distance_sphere
    st_contains st_within st_intersects point
    is_free_lock is_used_lock sleep benchmark
    """.split()
)

# Server error numbers by what they mean for a retry.
_ACCESS_DENIED = frozenset({1044, 1045, 1142, 1143, 1227, 1370, 1698})
_READ_ONLY = frozenset({1792, 1290, 1836})
_UNAVAILABLE = frozenset({1040, 1053, 1081, 1152, 1158, 1159, 1160, 1161, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031})
_LOCKS = frozenset({1205, 1213})
_TIME_LIMIT = frozenset({3024, 1969, 1317, 1028})
_UNKNOWN_DATABASE = 1049
# Duplicate key, foreign key (parent missing, child rows present), NULL into NOT NULL, no
# default, CHECK constraints (MySQL's 3819, MariaDB's 4025): the server's message names the
# key or constraint.
_CONSTRAINTS = frozenset({1062, 1586, 1451, 1452, 1216, 1217, 1048, 1364, 3819, 4025})
# Client-side errors are 2000-2999. The numbers past those are newer servers' own errors about
# the query (MySQL's 3xxx, MariaDB's 4xxx: MariaDB's 4078 for `1 + POINT(1, 1)`), which running
# the same query again cannot mend.
_CLIENT_SIDE = range(2000, 3000)
# CR_SSL_CONNECTION_ERROR: TLS asked for by the connection and refused (a server without TLS, a
# certificate that does not match). The same URL fails the same way every time.
_TLS_REFUSED = 2026
_LOST_DURING_QUERY = 2013
# MySQL's own code for "maximum statement execution time exceeded", for results it let through.
_TIME_LIMIT_USED = 3024

# How long past its time limit a query may run before the client gives up on the socket.
BACKSTOP_SECONDS = 2.0
# Until the first query sets it, a connection waits at most this long for the server.
INITIAL_READ_TIMEOUT = 60

_TYPE_NAMES = {
    getattr(FIELD_TYPE, name): name for name in dir(FIELD_TYPE) if name.isupper() and isinstance(getattr(FIELD_TYPE, name), int)
}
_TYPE_NAMES.update(
    {
        FIELD_TYPE.NEWDECIMAL: "DECIMAL",
        FIELD_TYPE.TINY: "TINYINT",
        FIELD_TYPE.SHORT: "SMALLINT",
        FIELD_TYPE.LONG: "INT",
        FIELD_TYPE.INT24: "MEDIUMINT",
        FIELD_TYPE.LONGLONG: "BIGINT",
        FIELD_TYPE.VAR_STRING: "VARCHAR",
        FIELD_TYPE.STRING: "CHAR",
        FIELD_TYPE.NEWDATE: "DATE",
    }
)
_BINARY_OR_TEXT = frozenset({FIELD_TYPE.BLOB, FIELD_TYPE.TINY_BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.LONG_BLOB})
# Zero and invalid dates ('0000-00-00') come back as text among the column's real dates.
_DATES = frozenset({FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE, FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP})

# Session settings pinned before every query (see MySQL._reset_session).
_PINNED_SETTINGS = (
    "autocommit = 1, sql_mode = 'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', "
    "character_set_client = utf8mb4, character_set_connection = utf8mb4, character_set_results = utf8mb4"
)

# connection.info keys: the time limit asked for, and whether the server is MariaDB.
_MARIADB = "sqladapter.mysql.mariadb"


def _json_value(raw: Any) -> Any:
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8")
    return jsontypes.json_value(json.loads(raw))


def _bits(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


# COM_RESET_CONNECTION (MySQL 5.7.3, MariaDB 10.2.4): PyMySQL has no call for it.
_COM_RESET_CONNECTION = 0x1F


def _reset_connection_and_set(connection: Any, sql: str) -> None:
    """COM_RESET_CONNECTION and then `sql` (a SET), written together and read back together.

    Pipelined, so the reset costs no round trip of its own. This reaches into PyMySQL's packet
    layer (`_execute_command`, the sequence number, `_read_ok_packet`, `_read_query_result`):
    pyproject pins PyMySQL to a minor series for it, and the conformance kit's state test fails
    if it stops clearing what it must. A failure leaves the two answers half read, so the
    connection is closed and never used again.
    """
    try:
        connection._execute_command(_COM_RESET_CONNECTION, b"")
        connection._execute_command(COMMAND.COM_QUERY, sql)
        connection._read_ok_packet()  # the reset's answer
        connection._next_seq_id = 1  # the SET's answer is numbered from its own command
        connection._read_query_result()
    except BaseException:
        with contextlib.suppress(Exception):
            connection._force_close()
        raise


def _abandon(cursor: Any) -> None:
    # Left alone, the cursor's close (and the result's finalizer) would read the rest of the
    # rows off a socket that is about to be closed.
    result = cursor._result
    if result is not None:
        result.unbuffered_active = False
    cursor.connection = None


class MySQL(Dialect):
    name = "mysql"
    backends = ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql")
    drivername = "mysql+pymysql"
    grammar = "mysql"
    paramstyles = ("pyformat",)
    functions = FUNCTIONS
    # INSERT ... ON DUPLICATE KEY UPDATE b = VALUES(b) (MariaDB also spells it VALUE(b)): the
    # row being inserted, not a function with effects.
    write_functions = frozenset({"values", "value"})
    # Only how long to wait for the server: the rest (init_command, local_infile,
    # read_default_file, client_flag, ...) would let task input configure the session.
    inline_url_options = frozenset({"connect_timeout"})
    driver_errors = (pymysql.err.MySQLError,)
    error_rules = (
        ErrorRule(PermissionDeniedError, CREDENTIALS, codes=_ACCESS_DENIED),
        ErrorRule(PermissionDeniedError, READ_ONLY, codes=_READ_ONLY),
        ErrorRule(QueryTimeoutError, TIME_LIMIT, codes=_TIME_LIMIT),
        ErrorRule(LockTimeoutError, codes=_LOCKS),
        ErrorRule(ConstraintViolationError, CONSTRAINT, codes=_CONSTRAINTS),
        ErrorRule(ConnectionConfigError, DATABASE_NAME, codes=(_UNKNOWN_DATABASE,)),
        ErrorRule(DatabaseUnavailableError, codes=_UNAVAILABLE),
        ErrorRule(DatabaseUnavailableError, types=(pymysql.err.InterfaceError,)),
        ErrorRule(ConnectionConfigError, CONNECTION_OPTION, codes=(_TLS_REFUSED,)),
        # Client-side errors (2xxx): the connection, not the query, went wrong.
        ErrorRule(DatabaseUnavailableError, codes=_CLIENT_SIDE),
        ErrorRule(QueryError),
    )

    def engine_options(self, url, *, read_only):
        charset = url.query.get("charset")
        if charset is not None and str(charset).lower() not in ("utf8mb4", "utf8", "utf8mb3"):
            raise ConnectionConfigError(
                f"mysql: the connection sets charset={charset}; sqladapter talks to the server in utf8mb4 "
                "(parameter values are escaped for it), so remove charset from the connection's URL"
            )
        options = super().engine_options(url, read_only=read_only)
        # utf8mb4 whatever the URL says: PyMySQL escapes parameter values without regard to the
        # character set, which is safe in UTF-8 and not in multi-byte sets such as GBK.
        connect_args: dict[str, Any] = {"connect_timeout": 10, "charset": "utf8mb4"}
        if read_only:
            # Seeding (read-write) may wait long on a bulk load; queries have their own limit.
            connect_args["read_timeout"] = INITIAL_READ_TIMEOUT
            # Each statement is its own read-only transaction, so there is nothing to roll back
            # when a connection returns to the pool: that ROLLBACK would be a round trip per query.
            connect_args["autocommit"] = True
            options["pool_reset_on_return"] = None
        options["connect_args"] = connect_args
        return options

    def on_connect(self, dbapi_connection, *, read_only):
        if read_only:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION READ ONLY")

    def begin_write(self, connection, limits):
        # A write's session, set at its start in one round trip: the lexing settings the
        # canonical text relies on, the time limit (MariaDB's covers every statement; MySQL's
        # only SELECT, so there the lock wait limit and the socket backstop bound a write),
        # and lock waits no longer than the task's own limit.
        dbapi_connection = connection.dbapi_connection
        info = connection.info
        mariadb = info.get(_MARIADB)
        if mariadb is None:
            mariadb = info[_MARIADB] = "mariadb" in dbapi_connection.get_server_info().lower()
        timeout_ms = limits.timeout_ms
        limit = f"max_statement_time = {timeout_ms / 1000:.3f}" if mariadb else f"max_execution_time = {int(timeout_ms)}"
        lock_wait = max(1, -(-int(timeout_ms) // 1000))
        pinned = _PINNED_SETTINGS.replace("autocommit = 1", "autocommit = 0")
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET SESSION {limit}, innodb_lock_wait_timeout = {lock_wait}, sql_select_limit = DEFAULT, {pinned}")

    def thread_may_keep(self, connection):
        # Read-only engines autocommit, so no transaction stays open; the session variables
        # set here are this dialect's own and set again whenever a query needs other values.
        return bool(connection.dbapi_connection.get_autocommit())

    @contextlib.contextmanager
    def time_limit(self, connection, limits) -> Iterator[None]:
        dbapi_connection = connection.dbapi_connection
        timeout_ms = limits.timeout_ms
        # The server stops the statement at the limit; the socket timeout only catches a server
        # that stopped answering altogether.
        backstop = timeout_ms / 1000 + BACKSTOP_SECONDS
        dbapi_connection._read_timeout = backstop
        started = time.monotonic()
        try:
            yield
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == _LOST_DURING_QUERY and time.monotonic() - started >= backstop:
                connection.invalidate(exc)
                raise QueryTimeoutError(
                    f"mysql: no answer within {backstop:.1f}s of a {timeout_ms} ms time limit; the connection was closed",
                    code=_LOST_DURING_QUERY,
                ) from None
            raise
        if time.monotonic() - started >= timeout_ms / 1000:
            # The server stopped the statement, but some functions swallow that and answer
            # anyway (SLEEP on MySQL 8 returns 1, BENCHMARK on MariaDB 0): a made-up result.
            raise QueryTimeoutError(
                f"mysql: the query ran past its {timeout_ms} ms time limit and was stopped", code=_TIME_LIMIT_USED
            )

    def fetch(self, connection, sql, params, limits):
        dbapi_connection = connection.dbapi_connection
        self._reset_session(dbapi_connection, connection.info, limits.timeout_ms, limits.rows)
        cursor: Any = dbapi_connection.cursor(SSCursor)
        try:
            cursor.execute(sql, params)
            description = cursor.description
            if description is None:
                return (), []
            rows = self.fetch_rows(cursor.fetchmany, limits)
            if cursor.fetchone() is not None:
                # More rows are coming (the query's own LIMIT beats sql_select_limit, or the rows
                # read already fill the output budget). Reading them all to reuse the connection
                # could take long; closing it stops the server.
                _abandon(cursor)
                cursor = None
                connection.invalidate()
            return description, rows
        finally:
            if cursor is not None:
                with contextlib.suppress(pymysql.err.Error):
                    cursor.close()

    def _reset_session(self, dbapi_connection: Any, info: dict, timeout_ms: int, limit: int) -> None:
        # Every task, in one round trip: the session as the server opened it (COM_RESET_CONNECTION:
        # user variables, named locks, temporary tables and session settings gone, whatever got
        # past the guard), then read-only and autocommitting again, the
        # settings the canonical SQL's lexing depends on (sql_mode: no ANSI_QUOTES, no
        # NO_BACKSLASH_ESCAPES; utf8mb4 both ways, which PyMySQL's escaping of parameter values
        # relies on), and this task's own time and row limits. Nothing is cached from the last task.
        mariadb = info.get(_MARIADB)
        if mariadb is None:
            mariadb = info[_MARIADB] = "mariadb" in dbapi_connection.get_server_info().lower()
        if mariadb:
            settings = f"tx_read_only = 1, max_statement_time = {timeout_ms / 1000:.3f}"
        else:
            settings = f"transaction_read_only = 1, max_execution_time = {int(timeout_ms)}"
        _reset_connection_and_set(
            dbapi_connection, f"SET SESSION {settings}, sql_select_limit = {int(limit)}, {_PINNED_SETTINGS}"
        )

    def column_type(self, column, sample):
        type_code = column[1]
        if type_code in _BINARY_OR_TEXT:
            return "TEXT" if isinstance(sample, str) else "BLOB"
        return _TYPE_NAMES.get(type_code) or super().column_type(column, sample)

    def converter(self, column, sample) -> Callable[[Any], Any] | None:
        type_code = column[1]
        if type_code == FIELD_TYPE.JSON:
            return _json_value
        if type_code == FIELD_TYPE.BIT and isinstance(sample, (bytes, bytearray)):
            return _bits
        name, database_type = column[0], self.column_type(column, sample)
        if type_code == FIELD_TYPE.TIME:
            # A clock reading ("26:00:03.5" is a valid TIME), which PyMySQL reads as a timedelta:
            # it comes back as the server shows it, not as a duration. A value PyMySQL could
            # not read comes as the server's text.
            return jsontypes.named(jsontypes.clock, name, database_type)
        if type_code in _DATES:
            return jsontypes.checked_converter(sample, name, database_type)
        return jsontypes.converter_for(sample, name, database_type)

    def cancel(self, engine, dbapi_connection, *, end_session):
        # KILL from a control connection: QUERY stops the statement; CONNECTION ends the
        # session. Then, for the session, the socket is shut so the blocked read returns now
        # even if the server is still inside one long function call.
        ident = int(dbapi_connection.thread_id())
        try:
            control = engine.raw_connection()
            try:
                with control.dbapi_connection.cursor() as cursor:
                    cursor.execute(f"KILL {'CONNECTION' if end_session else 'QUERY'} {ident}")
            finally:
                control.close()
        finally:
            if end_session and dbapi_connection._sock is not None:
                with contextlib.suppress(OSError):
                    dbapi_connection._sock.shutdown(socket.SHUT_RDWR)

    def error_code(self, exc):
        # PyMySQL's errors are (errno, message).
        return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None

    def error_text(self, exc):
        return str(exc.args[1] if len(exc.args) > 1 else exc).strip()


class MySQLLoader(BulkLoader):
    # bulk_insert: the default executemany suits PyMySQL, which sends each batch as multi-row
    # INSERT statements.

    def replace_table(self, connection, staging, table):
        # MySQL commits before and after every DDL statement, so a drop then a rename would leave
        # a moment with no table. RENAME TABLE of several pairs is one atomic step.
        quote = connection.dialect.identifier_preparer.quote
        if not connection.dialect.has_table(connection, table):
            connection.exec_driver_sql(f"RENAME TABLE {quote(staging)} TO {quote(table)}")
            return
        old = quote(table + "__replaced")
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {old}")
        connection.exec_driver_sql(f"RENAME TABLE {quote(table)} TO {old}, {quote(staging)} TO {quote(table)}")
        connection.exec_driver_sql(f"DROP TABLE {old}")


MySQL.bulk_loader = MySQLLoader()


@hookimpl
def sqladapter_register_dialects(register):
    register(MySQL())
