"""PostgreSQL for sqladapter, through psycopg 3: `postgresql://`, `postgresql+psycopg://`, `postgres://`.

Connections of a read-only engine start with `default_transaction_read_only=on` and run each
statement as its own (therefore read-only) transaction. The server reports that setting back to
the client whenever it changes (PostgreSQL 14 and later), so before every query the dialect
checks, without a round trip, that no earlier statement switched it off, and switches it back
on if one did. Servers that do not report it get `BEGIN READ ONLY` around every query instead.
`statement_timeout` is the time limit, set only when it changes. Rows are streamed in small
chunks; a query without a LIMIT gets `LIMIT max_rows + 1` from the core (`row_limit_in_sql`),
and one with a larger LIMIT of its own is cancelled once enough rows have arrived, so a huge
result never crosses the wire.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import socket
from typing import Any, Iterator

import pglast
import psycopg
from pglast import ast as pg_ast
from pglast import enums as pg_enums
from pglast import parser as pg_parser
from pglast.stream import RawStream
from psycopg.postgres import types as pg_types
from psycopg.types.datetime import DateLoader, IntervalLoader, TimestampLoader, TimestamptzLoader

from sqladapter import (
    BulkLoader,
    ConnectionConfigError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    Dialect,
    InputError,
    Limits,
    LockTimeoutError,
    NotDmlError,
    NotReadOnlyError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    guard,
    hookimpl,
    jsontypes,
)
from sqladapter.error_rules import CONNECTION_OPTION, CONSTRAINT, CREDENTIALS, DATABASE_NAME, READ_ONLY, TIME_LIMIT, ErrorRule

log = logging.getLogger("sqladapter.postgresql")

# -- the allowlists, from the server's catalog --------------------------------------------------
#
# A query may call the functions of pg_catalog whose every overload is IMMUTABLE or STABLE (the
# server's own statement that they change nothing), minus EXCLUDED_FUNCTIONS, plus the reviewed
# VOLATILE ones in REVIEWED_FUNCTIONS; and the operators of pg_catalog whose functions are all
# non-volatile. Large objects (lo_*), advisory locks, set_config, index maintenance
# (brin_summarize_new_values, gin_clean_pending_list), WAL and replication functions, file
# access and signals are all VOLATILE, so they are never on the list, and neither is any
# function outside pg_catalog (extensions, user-defined functions).
_FUNCTIONS_QUERY = """
    SELECT p.proname, bool_and(p.provolatile <> 'v') FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind IN ('f', 'a', 'w')
    GROUP BY p.proname
"""
_OPERATORS_QUERY = """
    SELECT o.oprname FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
    WHERE o.oprnamespace = 'pg_catalog'::regnamespace
    GROUP BY o.oprname HAVING bool_and(p.provolatile <> 'v')
"""
# Marked STABLE, but they run queries built from their arguments, or hand out a transaction id.
EXCLUDED_FUNCTIONS = frozenset(
    {
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "txid_current",
        "pg_current_xact_id",
    }
)
# VOLATILE, but they only read the clock, the random generator or relation sizes, or wait
# (the time limit stops a wait).
REVIEWED_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "clock_timestamp",
        "timeofday",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "pg_database_size",
        "pg_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_total_relation_size",
    }
)
# Entries of the allowlist that are operators, not functions, carry this prefix.
OPERATOR = "operator "

# Parse-tree nodes a read-only query is made of (libpg_query's raw parse tree, through pglast).
# Anything else, INSERT inside a CTE, SELECT INTO, FOR UPDATE, is refused.
_READ_NODES = frozenset(
    """
    RawStmt SelectStmt ResTarget ColumnRef A_Star A_Const ParamRef FuncCall A_Expr BoolExpr NullTest
    BooleanTest SubLink RangeVar RangeSubselect RangeFunction JoinExpr SortBy WithClause
    CommonTableExpr CTESearchClause CTECycleClause TypeCast TypeName Alias CaseExpr CaseWhen
    CoalesceExpr MinMaxExpr SQLValueFunction A_ArrayExpr A_Indices A_Indirection RowExpr WindowDef
    GroupingSet GroupingFunc CollateClause NamedArgExpr String Integer Float Boolean BitString
    RangeTableSample XmlExpr XmlSerialize JsonObjectConstructor JsonArrayConstructor
    JsonArrayQueryConstructor JsonObjectAgg JsonArrayAgg JsonAggConstructor JsonValueExpr
    JsonKeyValue JsonOutput JsonReturning JsonFormat JsonIsPredicate JsonParseExpr JsonScalarExpr
    JsonSerializeExpr JsonFuncExpr JsonBehavior JsonArgument
    """.split()
)
# What an execute_sql statement may be made of: one of _WRITE_ROOTS, as the root only (no
# INSERT inside a CTE), and the read nodes plus these statements' own clauses.
_WRITE_ROOTS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
_WRITE_NODES = (
    _READ_NODES
    | _WRITE_ROOTS
    | frozenset(
        "OnConflictClause InferClause IndexElem MergeWhenClause MultiAssignRef SetToDefault ReturningClause ReturningOption".split()
    )
)
# BETWEEN and its variants name no operator in the raw tree; the server rewrites them to >= and <=.
_BETWEEN = frozenset(
    {
        pg_enums.A_Expr_Kind.AEXPR_BETWEEN,
        pg_enums.A_Expr_Kind.AEXPR_NOT_BETWEEN,
        pg_enums.A_Expr_Kind.AEXPR_BETWEEN_SYM,
        pg_enums.A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM,
    }
)
_QUOTED_TOKENS = frozenset({"SCONST", "USCONST", "XCONST", "BCONST"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Settings pinned before every query: how the canonical text's strings are lexed.
_PINNED = "SET standard_conforming_strings = on; SET backslash_quote = safe_encoding"

_READ_ONLY_OPTION = "-c default_transaction_read_only=on"
_READ_ONLY_SETTING = "default_transaction_read_only"


# json, jsonb and their arrays: one column may hold objects, arrays, strings and numbers.
_JSON_OIDS = frozenset({114, 199, 3802, 3807})
# date, timestamp, timestamptz, interval: values out of Python's range come back as text.
_TEMPORAL_OIDS = frozenset({1082, 1114, 1184, 1186})
# record and record[]: psycopg reads a ROW(...) as a tuple of its fields' texts, which would
# pass for an array of strings (ROW(1, 'a') as ["1", "a"]).
_RECORD_OIDS = frozenset({2249, 2287})

# Rows fetched per network chunk; chunked streaming needs libpq 17, older ones stream row by row.
# libpq holds a whole chunk in memory, so chunks stay small enough that wide rows (a megabyte
# each) cost tens of megabytes at worst, never the whole result.
_CHUNKED = psycopg.pq.version() >= 170000
_MAX_CHUNK = 64

# SQLSTATEs (and classes) by what they mean for a retry.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "53000"})
_LOCK_STATES = frozenset({"55P03"})
_READ_ONLY_STATES = frozenset({"25006"})
_ACCESS_STATES = frozenset({"42501"})
_UNKNOWN_DATABASE = "3D000"
# Connection failures that the same connection string can never get past: TLS or GSSAPI the
# server cannot give, a setting it does not know, an option libpq does not know or cannot read.
_CONFIG_PHRASES = (
    "connection is bad: invalid",
    "server does not support ssl",
    "ssl was required",
    "unrecognized configuration parameter",
    "invalid value for parameter",
    "invalid connection option",
    "gssapi encryption required",
    "sslmode value",
    "certificate",
    "root certificate file",
)
# Connection failures carry no SQLSTATE in psycopg; these are the server's words for a refusal.
_AUTH_PHRASES = ("password authentication failed", "no pg_hba.conf entry", "does not exist", "authentication failed")


def _as_text(loader: type) -> type:
    """`loader`, except that a value Python cannot hold comes back as PostgreSQL's own text."""

    def load(self: Any, data: Any) -> Any:
        try:
            return loader.load(self, data)
        except psycopg.DataError:
            return bytes(data).decode()

    return type(f"Text{loader.__name__}", (loader,), {"load": load})


# 'infinity', '-infinity', BC dates and years past 9999 are valid in PostgreSQL but not in
# Python, and psycopg refuses the whole result for one of them. These loaders are used only
# to run such a query again: the usual loaders stay in C for every other query.
_TEXT_WHEN_OUT_OF_RANGE = {
    "date": _as_text(DateLoader),
    "timestamp": _as_text(TimestampLoader),
    "timestamptz": _as_text(TimestamptzLoader),
    "interval": _as_text(IntervalLoader),
}


def _out_of_python_range(exc: Exception) -> bool:
    # Raised by psycopg while loading a row, so without a SQLSTATE from the server.
    text = str(exc)
    return isinstance(exc, psycopg.DataError) and exc.sqlstate is None and (" too large " in text or " too small " in text)


def _shut_socket(fd: int) -> None:
    # shutdown(), not close(): the socket stays the driver's to close; a read blocked on it
    # returns at once, and the driver reports the connection lost.
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


# pglast's scanner reports token offsets in characters of the text (inclusive ends), so all of
# this works on the str itself.


def _scan(sql: str) -> list[Any]:
    try:
        return list(pg_parser.scan(sql))
    except pglast.parser.ParseError as exc:
        raise QueryError(f"postgresql: cannot parse the query: {guard.first_line(exc)}") from None


def _parse(sql: str) -> Any:
    try:
        return pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise QueryError(f"postgresql: cannot parse the query: {guard.first_line(exc)}") from None
    except RecursionError:
        raise InputError("the query is nested too deeply to parse: flatten the expression") from None


def _text(token: Any, sql: str) -> str:
    return sql[token.start : token.end + 1]


def _quoted(token: Any, sql: str) -> bool:
    # String constants, and identifiers written in double quotes (plain ones hold no spaces).
    return token.name in _QUOTED_TOKENS or (token.name in ("IDENT", "UIDENT") and sql[token.start] in '"Uu')


def _placeholders(tokens: list[Any], sql: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of each `?` and `:name`, as PostgreSQL's own scanner reads the text."""
    spans = []
    for i, token in enumerate(tokens):
        text = _text(token, sql)
        if token.name == "Op" and text == "?":
            spans.append((token.start, token.end + 1, ""))
        elif text == ":" and i + 1 < len(tokens):
            following = tokens[i + 1]
            name = _text(following, sql)
            if following.start == token.end + 1 and _NAME.match(name):
                spans.append((token.start, following.end + 1, name))
    return spans


def _replace(sql: str, spans: list[tuple[int, int, str]], numbers: list[int]) -> str:
    parts, position = [], 0
    for (start, end, _), number in zip(spans, numbers):
        parts += [sql[position:start], f"${number}"]
        position = end
    parts.append(sql[position:])
    return "".join(parts)


def _params(canonical: str) -> list[tuple[int, int, int]]:
    """(start, end, number) of each $n in the canonical text."""
    return [
        (token.start, token.end + 1, int(canonical[token.start + 1 : token.end + 1]))
        for token in pg_parser.scan(canonical)
        if token.name == "PARAM"
    ]


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, pg_ast.Node):
            yield item
            stack.extend(getattr(item, name) for name in item)


def _check_call(qualified: Any, allowed: frozenset[str], what: str) -> None:
    names = [part.sval for part in qualified or ()]
    if not names:
        return
    *schema, name = names
    if schema and schema != ["pg_catalog"]:
        raise NotReadOnlyError(
            f"the {what} {'.'.join(names)} is not allowed in a query on postgresql: only pg_catalog's "
            f"built-in {what}s without side effects are"
        )
    key = name if what == "function" else OPERATOR + name
    if key not in allowed:
        shown = f"{name}()" if what == "function" else name
        raise NotReadOnlyError(
            f"{what} {shown} is not allowed in a query on postgresql: only the built-in {what}s that the "
            "server marks free of side effects are (see the plugin's README)"
        )


def _check_write_call(qualified: Any, allowed: frozenset[str], what: str) -> None:
    try:
        _check_call(qualified, allowed, what)
    except NotReadOnlyError as exc:
        raise NotDmlError(exc.message.replace("in a query", "in execute_sql")) from None


def _kind(node: Any) -> str:
    return type(node).__name__.removesuffix("Stmt").upper() or "statement"


class PostgreSQL(Dialect):
    name = "postgresql"
    backends = ("postgresql", "postgresql+psycopg", "postgres")
    drivername = "postgresql+psycopg"
    grammar = "postgres"
    paramstyles = ("numeric_dollar",)
    # Only how long to wait for the server: `options` sets any session setting, `sslmode`,
    # `service`, `passfile` and the rest configure the client, so they belong to the operator.
    inline_url_options = frozenset({"connect_timeout"})
    # A streamed query stopped early must be cancelled, and the rows already on their way
    # drained: tens of milliseconds on a big table. Told the limit, the server stops by itself.
    row_limit_in_sql = True
    driver_errors = (psycopg.Error,)
    error_rules = (
        ErrorRule(QueryTimeoutError, TIME_LIMIT, codes=("57014",)),
        ErrorRule(PermissionDeniedError, READ_ONLY, codes=_READ_ONLY_STATES),
        ErrorRule(PermissionDeniedError, CREDENTIALS, code_prefixes=("28",), codes=_ACCESS_STATES),
        ErrorRule(ConnectionConfigError, DATABASE_NAME, codes=(_UNKNOWN_DATABASE,)),
        ErrorRule(LockTimeoutError, code_prefixes=("40",), codes=_LOCK_STATES),
        # Class 23: a unique, foreign key, not-null, check or exclusion constraint; the server's
        # message names the constraint.
        ErrorRule(ConstraintViolationError, CONSTRAINT, code_prefixes=("23",)),
        ErrorRule(DatabaseUnavailableError, code_prefixes=("08",), codes=_UNAVAILABLE_STATES),
        # Failures to connect carry no SQLSTATE (codes None): known by libpq's and the server's words.
        ErrorRule(ConnectionConfigError, CONNECTION_OPTION, codes=(None,), phrases=_CONFIG_PHRASES),
        ErrorRule(
            ConnectionConfigError,
            DATABASE_NAME,
            types=(psycopg.OperationalError,),
            codes=(None,),
            pattern="database .*does not exist",
        ),
        ErrorRule(PermissionDeniedError, CREDENTIALS, types=(psycopg.OperationalError,), codes=(None,), phrases=_AUTH_PHRASES),
        ErrorRule(DatabaseUnavailableError, types=(psycopg.OperationalError,), codes=(None,)),
        ErrorRule(DatabaseUnavailableError, types=(psycopg.InterfaceError,)),
        ErrorRule(QueryError),
    )

    # -- checking a query with PostgreSQL's own parser -------------------------------------------

    def allowed_functions(self, dbapi_connection):
        with dbapi_connection.cursor() as cursor:
            catalog = dict(cursor.execute(_FUNCTIONS_QUERY).fetchall())
            operators = {OPERATOR + row[0] for row in cursor.execute(_OPERATORS_QUERY)}
        functions = {name for name, unchanging in catalog.items() if unchanging} - EXCLUDED_FUNCTIONS
        return frozenset(functions | (REVIEWED_FUNCTIONS & catalog.keys()) | operators)

    def compile(self, sql, allowed):
        return self._compile(sql, allowed, write=False)

    def compile_write(self, sql, allowed):
        return self._compile(sql, allowed, write=True)

    def _compile(self, sql: str, allowed: frozenset[str], *, write: bool) -> guard.Checked:
        guard.check_nesting(sql)
        tokens = _scan(sql)
        guard.check_characters(sql, ((t.start, t.end + 1) for t in tokens if _quoted(t, sql)))
        spans = _placeholders(tokens, sql)
        names = [name for _, _, name in spans]
        if names and all(names):
            style = "named"
            numbers = {name: i for i, name in enumerate(dict.fromkeys(names), 1)}
            marks = [numbers[name] for name in names]
            by_number = {n: name for name, n in numbers.items()}
        elif names and not any(names):
            style = "positional"
            marks = list(range(1, len(names) + 1))
            by_number = {n: f"_p{n - 1}" for n in marks}
        elif names:
            raise InputError("the query mixes :name and ? placeholders; use one style")
        else:
            style, marks, by_number = None, [], {}
        if any(t.name == "PARAM" for t in tokens):
            raise InputError("write parameters as :name (with an object) or ? (with a list), not $1")
        marked = _replace(sql, spans, marks)
        tree = _parse(marked)
        if write:
            guard.check_write(self, tree, allowed)
        else:
            guard.check(self, tree, allowed)
        try:
            # pglast's printer and its tree comparison recurse once per level, as its parser does.
            canonical = RawStream()(tree)
            same = _parse(canonical) == tree
        except RecursionError:
            raise InputError("the query is nested too deeply to parse: flatten the expression") from None
        if not same:
            raise QueryError(
                "the query cannot be written out unambiguously for the database; simplify it "
                "(this is a guard against parser differences, not a syntax error)"
            )
        written = [(start, end, by_number.get(number, "")) for start, end, number in _params(canonical)]
        if sorted(name for *_, name in written) != sorted(by_number[m] for m in marks):
            raise QueryError("unsupported placeholder syntax: use :name (with an object) or ? (with a list)")
        statement = tree[0].stmt
        if write:
            returning = bool(getattr(statement, "returningClause", None) or getattr(statement, "returningList", None))
            return guard.Checked(canonical, tuple(written), style, False, returning)
        limitable = (
            isinstance(statement, pg_ast.SelectStmt)
            and statement.limitCount is None
            and statement.limitOffset is None
            and not statement.lockingClause
            and statement.intoClause is None
        )
        return guard.Checked(canonical, tuple(written), style, limitable)

    def check_tree(self, tree, allowed):
        if len(tree) != 1:
            raise NotReadOnlyError(f"the query holds {len(tree)} statements; send exactly one read-only statement per task")
        statement = tree[0].stmt
        if isinstance(statement, pg_ast.ExplainStmt):
            for option in statement.options or ():
                if option.defname not in (
                    "analyze",
                    "verbose",
                    "costs",
                    "buffers",
                    "format",
                    "summary",
                    "timing",
                    "settings",
                    "wal",
                    "generic_plan",
                    "memory",
                    "serialize",
                ):
                    raise NotReadOnlyError(f"EXPLAIN option {option.defname} is not accepted")
            statement = statement.query
        if not isinstance(statement, pg_ast.SelectStmt):
            raise NotReadOnlyError(
                f"only read-only queries are accepted (SELECT, WITH ... SELECT, VALUES, EXPLAIN), got {_kind(statement)}"
            )
        for node in _walk(statement):
            kind = type(node).__name__
            if kind not in _READ_NODES:
                raise NotReadOnlyError(f"the query contains {_kind(node)}, which is not accepted in a read-only query")
            if kind == "SelectStmt" and (node.intoClause is not None or node.lockingClause):
                raise NotReadOnlyError(
                    "the query contains SELECT INTO or a locking clause (FOR UPDATE/SHARE), which is not accepted"
                )
            elif kind == "FuncCall":
                _check_call(node.funcname, allowed, "function")
            elif kind == "A_Expr" and node.kind not in _BETWEEN:
                _check_call(node.name, allowed, "operator")

    def check_write_tree(self, tree, allowed):
        if len(tree) != 1:
            raise NotDmlError(f"the statement holds {len(tree)} statements; give one per entry of statements")
        statement = tree[0].stmt
        if type(statement).__name__ not in _WRITE_ROOTS:
            raise NotDmlError(
                f"execute_sql runs one INSERT, UPDATE, DELETE or MERGE (upserts included), got {_kind(statement)}; "
                "DDL is not run by tasks, and queries go to query_sql"
            )
        for node in _walk(statement):
            kind = type(node).__name__
            if kind not in _WRITE_NODES:
                raise NotDmlError(f"the statement contains {_kind(node)}, which is not accepted in execute_sql")
            if kind in _WRITE_ROOTS and node is not statement:
                raise NotDmlError(f"the statement contains a nested {_kind(node)}: give each write as its own statement")
            if kind == "SelectStmt" and (node.intoClause is not None or node.lockingClause):
                raise NotDmlError("the statement contains SELECT INTO or a locking clause, which is not accepted")
            elif kind == "FuncCall":
                _check_write_call(node.funcname, allowed, "function")
            elif kind == "A_Expr" and node.kind not in _BETWEEN:
                _check_write_call(node.name, allowed, "operator")

    # -- engines ---------------------------------------------------------------------------------

    def engine_options(self, url, *, read_only):
        options = super().engine_options(url, read_only=read_only)
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if read_only:
            existing = url.query.get("options")
            if isinstance(existing, tuple):
                existing = " ".join(existing)
            connect_args["options"] = f"{existing} {_READ_ONLY_OPTION}" if existing else _READ_ONLY_OPTION
            options["isolation_level"] = "AUTOCOMMIT"
        options["connect_args"] = connect_args
        return options

    def on_connect(self, dbapi_connection, *, read_only):
        if read_only:
            # Queries run as RawCursor: the canonical SQL writes parameters as $1, $2, which go to
            # the server as they are and are bound there. (Set after SQLAlchemy's first-connect
            # setup, whose own queries use %(name)s.)
            dbapi_connection.cursor_factory = psycopg.RawCursor
        if read_only and dbapi_connection.info.parameter_status(_READ_ONLY_SETTING) is None:
            # A server that does not report the setting (before PostgreSQL 14): psycopg wraps
            # every query in BEGIN READ ONLY, which no statement inside can undo.
            dbapi_connection.autocommit = False
            dbapi_connection.read_only = True

    def begin_write(self, connection, limits):
        # The read-write engine's connections are in a transaction from the first statement on
        # (time_limit's SET LOCAL begins it): the lexing settings the canonical text relies on
        # are pinned for this transaction alone.
        connection.dbapi_connection.execute(
            "SET LOCAL standard_conforming_strings = on; SET LOCAL backslash_quote = safe_encoding"
        )

    def write_cursor(self, connection):
        # The canonical SQL writes parameters as $1, $2: bound by the server, as for queries.
        return psycopg.RawCursor(connection.dbapi_connection)

    def thread_may_keep(self, connection):
        # In autocommit no transaction outlives a query; fetch closes its cursor and stream.
        return bool(connection.dbapi_connection.autocommit)

    @contextlib.contextmanager
    def time_limit(self, connection, limits) -> Iterator[None]:
        dbapi_connection = connection.dbapi_connection
        if dbapi_connection.autocommit:
            # Every task starts from the session as it was opened (RESET ALL returns every setting
            # to its value at connect, default_transaction_read_only=on among them), with no
            # advisory lock held, the lexing settings pinned and its own time limit: one round
            # trip, and nothing cached from the task before.
            dbapi_connection.execute(
                f"RESET ALL; SELECT pg_catalog.pg_advisory_unlock_all(); {_PINNED}; "
                f"SET statement_timeout = {int(limits.timeout_ms)}"
            )
        else:
            dbapi_connection.execute(f"SET LOCAL statement_timeout = {int(limits.timeout_ms)}")
        yield

    def fetch(self, connection, sql, params, limits):
        dbapi_connection = connection.dbapi_connection
        if dbapi_connection.autocommit:
            self._ensure_read_only(dbapi_connection)
        try:
            return self._stream(dbapi_connection.cursor(), sql, params, limits)
        except psycopg.DataError as exc:
            if not _out_of_python_range(exc):
                raise
        # Read-only, so running it again is safe; only such results pay for the Python loaders.
        cursor = dbapi_connection.cursor()
        for name, loader in _TEXT_WHEN_OUT_OF_RANGE.items():
            cursor.adapters.register_loader(name, loader)
        return self._stream(cursor, sql, params, limits)

    def _stream(self, cursor: Any, sql: str, params: Any, limits: Limits) -> tuple[Any, list]:
        limit = limits.rows
        try:
            stream = cursor.stream(sql, params, size=min(limit, _MAX_CHUNK) if _CHUNKED else 1)
            try:
                rows = self.fetch_rows(lambda n: list(itertools.islice(stream, n)), limits)
                if len(rows) == limit:
                    # With the limit in the SQL the result ends here: reading on to its end
                    # spares the cancel (a new connection to the server) that closing early sends.
                    next(stream, None)
            finally:
                # Closing the stream early cancels the query on the server.
                stream.close()
            description = cursor.description
            if description is None:
                return (), []
            return description, rows
        finally:
            cursor.close()

    def _ensure_read_only(self, dbapi_connection: Any) -> None:
        status = dbapi_connection.info.parameter_status(_READ_ONLY_SETTING)
        if status != "on":
            log.warning("postgresql: %s was %s on a pooled connection; setting it back on", _READ_ONLY_SETTING, status)
            dbapi_connection.execute(f"SET SESSION {_READ_ONLY_SETTING} = on")

    def column_type(self, column, sample):
        oid = column[1]
        info = pg_types.get(oid) if isinstance(oid, int) else None
        if info is None:
            return super().column_type(column, sample)
        return f"{info.name}[]" if info.array_oid == oid and info.oid != oid else info.name

    def converter(self, column, sample):
        type_code = column[1]
        if type_code in _JSON_OIDS:
            return jsontypes.json_value
        name, database_type = column[0], self.column_type(column, sample)
        if type_code in _RECORD_OIDS:
            raise QueryError(
                f"column {name!r} is a row value ({database_type}), which has no JSON form: select its "
                "fields as columns of their own, or make it an object with to_jsonb(...)"
            )
        if type_code in _TEMPORAL_OIDS:
            return jsontypes.checked_converter(sample, name, database_type)
        return jsontypes.converter_for(sample, name, database_type)

    def cancel(self, engine, dbapi_connection, *, end_session):
        if not end_session:
            # A cancel request on a connection of its own, as libpq sends it.
            dbapi_connection.cancel_safe(timeout=5)
            return
        # The server did not act on the cancel: end the backend from a control connection, and
        # give up on the socket, so the driver call blocked on it returns now.
        pid = dbapi_connection.info.backend_pid
        try:
            control = engine.raw_connection()
            try:
                with control.dbapi_connection.cursor() as cursor:
                    cursor.execute("SELECT pg_catalog.pg_terminate_backend($1)", (pid,))
            finally:
                control.close()
        finally:
            _shut_socket(dbapi_connection.pgconn.socket)

    def error_code(self, exc):
        return getattr(exc, "sqlstate", None) or None


class PostgreSQLLoader(BulkLoader):
    def bulk_insert(self, dialect, dbapi_connection, table, columns, batches):
        # COPY streams rows in one statement: several times faster than batched INSERTs.
        count = 0
        with dbapi_connection.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for batch in batches:
                    for row in batch:
                        copy.write_row(row)
                    count += len(batch)
        return count


PostgreSQL.bulk_loader = PostgreSQLLoader()


@hookimpl
def sqladapter_register_dialects(register):
    register(PostgreSQL())
