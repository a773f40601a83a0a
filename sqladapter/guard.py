"""The read-only check: exactly one statement, and nothing in it that writes or reaches outside.

The query is parsed with the dialect's own sqlglot grammar, never matched with a regex. What
cannot be parsed is refused, not guessed at. This is one of two layers: every dialect also
opens its connections read-only at the database level, so a statement that slipped past this
check would still be refused by the database.
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from .errors import InputError, NotReadOnlyError, QueryError

# sqlglot warns on stderr for every statement it parses as an opaque command (EXPLAIN, VACUUM);
# the guard refuses or re-checks those itself, so the warning is noise in a worker's log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# Statement roots that only read.
_READ_ROOTS = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)

# Nodes that write, change the session, reach outside the database, or take locks, anywhere
# in the tree (a CTE can hold a DELETE; a SELECT can hold INTO or FOR UPDATE).
_FORBIDDEN_NODES = tuple(
    getattr(exp, name)
    for name in (
        "Insert Update Delete Merge Create Drop Alter TruncateTable Command Pragma Set "
        "Transaction Commit Rollback Copy Attach Detach Install LoadData Grant Revoke Use "
        "Analyze Kill Export Into Lock Refresh Cache Uncache Declare Execute"
    ).split()
    if hasattr(exp, name)
)

# Functions refused whatever the dialect: they write, lock, sleep the server's sequences
# forward, or read files. Dialects add their own through `Dialect.forbidden_functions`.
CORE_FORBIDDEN_FUNCTIONS = frozenset(
    {
        "load_extension",
        "readfile",
        "writefile",
        "load_file",
        "nextval",
        "setval",
        "set_config",
        "get_lock",
        "release_lock",
        "release_all_locks",
        "lo_import",
        "lo_export",
        "pg_read_file",
        "pg_read_binary_file",
        "dblink",
        "dblink_exec",
        # PostgreSQL functions that signal other sessions, write the WAL or the server's files,
        # notify listeners, or run SQL held in a string (which this check never sees).
        "pg_notify",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_promote",
        "pg_logical_emit_message",
        "pg_stat_file",
        "pg_import_system_collations",
        "pg_log_backend_memory_contexts",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "loread",
        "lowrite",
    }
)

# Function name prefixes refused the same way: lock, large-object, remote-connection, directory
# listing, server-file, statistics-reset, backup and replication families.
_FORBIDDEN_PREFIXES = (
    "pg_advisory",
    "pg_try_advisory",
    "lo_",
    "dblink",
    "pg_ls_",
    "pg_file_",
    "pg_stat_reset",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_create_",
    "pg_drop_replication",
    "pg_copy_",
    "pg_replication_",
    "pg_wal_replay_",
)

# EXPLAIN is not parsed by every grammar; its options are skipped and the statement it
# explains is checked like any query.
_EXPLAIN = re.compile(
    r"^\s*explain\b((?:\s+(?:query\s+plan|analyze|verbose|extended|format\s*=?\s*\w+)\b|\s*\([^)]*\))*)",
    re.IGNORECASE,
)


_EXECUTABLE_COMMENT = ("!", "M!")


def parse_one(sql: str, grammar: str | None) -> exp.Expression:
    """Parse `sql` as exactly one statement, or raise."""
    if not isinstance(sql, str) or not sql.strip():
        raise InputError("query is empty: give one SELECT statement")
    try:
        dialect = sqlglot.Dialect.get_or_raise(grammar)
        tokens = dialect.tokenize(sql)
        statements = [s for s in dialect.parser().parse(tokens, sql) if s is not None]
    except SqlglotError as exc:
        raise QueryError(f"cannot parse the query as {grammar or 'SQL'}: {_first_line(exc)}") from None
    # MySQL and MariaDB run the text of /*! ... */ and /*M! ... */ comments as SQL, so a
    # statement that parses as a harmless SELECT could write a file or take a lock there.
    if any(c.startswith(_EXECUTABLE_COMMENT) for token in tokens for c in token.comments or ()):
        raise NotReadOnlyError(
            "the query holds an executable comment (/*! ... */ or /*M! ... */), which the server would "
            "run as SQL; remove it or write its contents as plain SQL"
        )
    if not statements:
        raise InputError("query is empty: give one SELECT statement")
    if len(statements) > 1:
        raise NotReadOnlyError(
            f"the query holds {len(statements)} statements; send exactly one read-only statement per task"
        )
    return statements[0]


def check(tree: exp.Expression, sql: str, grammar: str | None, forbidden_functions: frozenset[str]) -> None:
    """Raise NotReadOnlyError unless `tree` is a single read-only query."""
    if isinstance(tree, exp.Command) and str(tree.this).upper() == "EXPLAIN":
        match = _EXPLAIN.match(sql)
        if match is None:
            raise NotReadOnlyError("EXPLAIN with these options is not accepted; use EXPLAIN SELECT ...")
        inner = parse_one(sql[match.end() :], grammar)
        return check(inner, sql[match.end() :], grammar, forbidden_functions)
    if isinstance(tree, exp.Describe) and isinstance(tree.this, _READ_ROOTS):
        tree = tree.this
    if not isinstance(tree, _READ_ROOTS):
        raise NotReadOnlyError(
            f"only read-only queries are accepted (SELECT, WITH ... SELECT, VALUES, EXPLAIN), got {_kind(tree)}"
        )
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise NotReadOnlyError(f"the query contains {_kind(node)}, which is not read-only; only SELECT is accepted")
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in CORE_FORBIDDEN_FUNCTIONS or name in forbidden_functions or _is_forbidden_family(name):
                raise NotReadOnlyError(
                    f"function {name}() is not allowed in a query: it has side effects or reads outside the database"
                )


def _is_forbidden_family(name: str) -> bool:
    return name.startswith(_FORBIDDEN_PREFIXES)


def _kind(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return f"a {str(node.this).upper()} command"
    return f"a {type(node).__name__.upper()} statement" if node.parent is None else type(node).__name__.upper()


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
