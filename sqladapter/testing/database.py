"""`Database`: what a plugin's test fixture hands the conformance kit about one real database."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Database"]


@dataclass(kw_only=True)
class Database:
    """One real database the plugin's dialect serves, and what the kit may do with it.

    Only `dialect`, `connection_string`, `raw_connect`, `data_dir` and `slow_query` are
    required; every other field turns on a check (a check whose field is left empty is
    skipped, saying which field would turn it on) or tells the kit what the database allows.

    The kit creates these tables in the database through `raw_connect`, dropping any of the same
    name first: `numbers` (n INTEGER, 1..10), `people` (the tutorial's five people), `audit`,
    `kit_rows` (10,000 rows: id, label) and `kit_wide` (200 rows of 20,000 characters: id, v).
    Use a database (or file) of its own for the kit.
    """

    # -- the database ----------------------------------------------------------------------------

    #: The registered `Dialect.name` under test.
    dialect: str
    #: What a task's `connection_string` holds for this database: a URL, or for a file
    #: database a path relative to `data_dir`. Inline, so without a password.
    connection_string: str
    #: A new DB-API connection to the same database, outside sqladapter, that may write
    #: (autocommit, or the kit commits). The kit re-reads what a statement could have changed
    #: with it, and creates its tables with it.
    raw_connect: Callable[[], Any]
    #: The data directory tasks run with (Settings.data_dir): file paths resolve there. For a
    #: server any empty directory; the kit puts a symlink to its secret file in it.
    data_dir: Path
    #: Whether `raw_connect` works while sqladapter holds connections to the database. False
    #: for DuckDB files (a second configuration of one open file is refused): the kit then
    #: closes its runtime before every raw read.
    raw_while_connected: bool = True
    #: The plugin manager runtimes are made with; None: the installed plugins (entry points).
    plugin_manager: Any = None

    # -- read-only, twice over -------------------------------------------------------------------

    #: Statements beyond the kit's own writes that the database itself must refuse when the
    #: guard is bypassed (a writable CTE, CREATE TEMPORARY TABLE, reading a file).
    database_refuses: Sequence[str] = ()
    #: Statements beyond the kit's own writes that the guard alone must refuse when the
    #: database's read-only layer is bypassed (SET, a lock function, a file function).
    guard_refuses: Sequence[str] = ()
    #: Statements that try to switch the session's read-only mode off; each runs with the guard
    #: bypassed and the next write on the same connection must still be refused.
    read_only_off: Sequence[str] = ()
    #: Tags of the hostile corpus that apply (see sqladapter/testing/hostile.py); None:
    #: ("common", dialect).
    hostile_tags: Sequence[str] | None = None
    #: A read-only query whose answer shows the session's state (settings, temporary objects,
    #: attached databases, locks it holds). It must answer the same before and after every
    #: hostile statement, and after the statements in `state_changes`.
    probe: str = "SELECT count(*) AS n FROM people"
    #: With a raw connection: everything else a statement could change, to compare before and
    #: after (the catalog's tables, sequences, routines and roles, locks held, server settings).
    #: For a file database the kit compares the files of `data_dir` itself.
    state: Callable[[Any], Any] | None = None
    #: Statements that change a session's state (a setting, a temporary table, a lock), run with
    #: the guard bypassed; the next task on the same connection must see none of it, in `probe`.
    state_changes: Sequence[str] = ()
    #: Inline connection strings carrying options task input must not set (each is refused
    #: naming the option, and nothing runs).
    refused_connection_strings: Sequence[str] = ()

    # -- deadlines ---------------------------------------------------------------------------------

    #: A query that runs for seconds unless its time limit stops it. Best one that also ends by
    #: itself within a minute, so that a plugin without a deadline fails instead of hanging.
    slow_query: str
    #: A query whose time is spent inside one call the database's own time limit does not
    #: interrupt (a string search over megabytes): the worker must still report on time.
    unstoppable_query: str | None = None
    #: Words the time-limit error of `unstoppable_query` must hold ("ended the session").
    unstoppable_message: str | None = None
    #: With a raw connection: how many statements of `unstoppable_query` still run on the
    #: server. After the task reports, it must drop to 0 (the statement was ended, not left).
    still_running: Callable[[Any], int] | None = None

    # -- the JSON type contract --------------------------------------------------------------------

    #: Contract kind (sqladapter.testing.KINDS) -> SQL expression making its value. Kinds the
    #: database lacks are left out.
    types: Mapping[str, str] = field(default_factory=dict)
    #: Alias -> (SQL expression, expected JSON or a predicate on it): the database's own values.
    extra_types: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    #: Kind or alias -> the type name the output's `columns` must report for it.
    column_types: Mapping[str, str] = field(default_factory=dict)
    #: A one-row table the type expressions are selected from, for types only a column has.
    types_from: str = ""

    # -- errors and connections --------------------------------------------------------------------

    #: A connection string of this dialect whose database cannot be reached (a port nobody
    #: listens on): retryable. None for a database inside the worker's process.
    unreachable: str | None = None
    #: A connection string with credentials the server refuses (a wrong password): terminal,
    #: and its password never shown. Used as a named connection.
    refused_credentials: str | None = None
    #: A connection string with a password the server accepts: failures on it (a syntax error,
    #: a missing table, a time limit) never show the password either. Used as a named connection.
    password_connection_string: str | None = None
    #: End the server session of a DB-API connection from outside (KILL, pg_terminate_backend),
    #: as a server restart or an idle timeout would: the next task must still succeed.
    end_session: Callable[[Any], None] | None = None

    # -- kept by the kit ---------------------------------------------------------------------------

    _prepared: bool = field(default=False, init=False, repr=False)
    _bypass_checked: bool = field(default=False, init=False, repr=False)
    _suspect: bool = field(default=False, init=False, repr=False)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.hostile_tags) if self.hostile_tags is not None else ("common", self.dialect)
