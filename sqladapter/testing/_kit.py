"""The machinery under the suite: runtimes, the two bypasses, raw snapshots, bounded runs.

Everything that makes a Runtime or runs a task goes through `_runtime` and `Session`, so the
suite's checks read as what they check.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from .. import guard
from ..deadlines import GRACE_SECONDS
from ..errors import SqlAdapterError
from ..runtime import Runtime
from ..seed import tutorial_people
from ..settings import Settings
from .database import Database

#: What the README promises a query past its limit: timeout_ms plus two grace periods (the
#: watchdog cancels, then ends the session), plus this much for the database and a shared
#: machine to act on it.
SLACK_SECONDS = 2.0
#: timeout_ms of the kit's own small queries (the probe among them): far longer than they take.
QUICK_TIMEOUT_MS = 10_000

NUMBERS = list(range(1, 11))
KIT_ROWS = 10_000
WIDE_ROWS, WIDE_WIDTH = 200, 20_000
PEOPLE_COLUMNS = ("name", "surname", "birth_date", "zip_code")
KIT_TABLES = ("numbers", "people", "audit", "kit_rows", "kit_wide", "kit_sneaky")


def promise(timeout_ms: int) -> float:
    """Seconds from a task's start within which a query past `timeout_ms` must have reported."""
    return timeout_ms / 1000 + 2 * GRACE_SECONDS + SLACK_SECONDS


def _runtime(settings: Settings, plugin_manager: Any = None, environ: Mapping[str, str] | None = None) -> Runtime:
    """The one place the kit makes a Runtime."""
    return Runtime(settings, plugin_manager=plugin_manager, environ=environ)


def label(sql: str) -> str:
    """'an INSERT', 'a CREATE TABLE': how the suite's messages name a statement."""
    words = sql.split()
    if not words:
        return "an empty statement"
    head = words[0].upper()
    if head in ("CREATE", "DROP", "ALTER") and len(words) > 1:
        head += " " + words[1].upper()
        if words[1].upper() in ("TEMP", "TEMPORARY") and len(words) > 2:
            head += " " + words[2].upper()
    return f"{'an' if head[0] in 'AEIOU' else 'a'} {head}"


def _approve(*_args: Any, **_kwargs: Any) -> None:
    """guard.check bypassed: every tree approved."""


# -- counting rows at the DB-API boundary --------------------------------------------------------


class RowCounter:
    rows = 0


class _Counting:
    """A DB-API connection or cursor that counts the rows it returns."""

    def __init__(self, target: Any, counter: RowCounter) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_counter", counter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def cursor(self, *args: Any, **kwargs: Any) -> _Counting:
        return _Counting(self._target.cursor(*args, **kwargs), self._counter)

    def duplicate(self) -> _Counting:
        # A session of its own on the same database (DuckDB): its rows count too.
        return _Counting(self._target.duplicate(), self._counter)

    def fetchone(self) -> Any:
        row = self._target.fetchone()
        self._counter.rows += row is not None
        return row

    def fetchmany(self, *args: Any, **kwargs: Any) -> list:
        rows = self._target.fetchmany(*args, **kwargs)
        self._counter.rows += len(rows)
        return rows

    def fetchall(self) -> list:
        rows = self._target.fetchall()
        self._counter.rows += len(rows)
        return rows

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        inner = self._target.stream(*args, **kwargs)
        try:
            for row in inner:
                self._counter.rows += 1
                yield row
        finally:
            inner.close()

    def __iter__(self) -> Any:
        for row in self._target:
            self._counter.rows += 1
            yield row

    def __enter__(self) -> _Counting:
        self._target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._target.__exit__(*exc)


class _CountingPooled:
    """The pool's connection as a dialect's fetch sees it, its driver connection counting."""

    def __init__(self, pooled: Any, counter: RowCounter) -> None:
        self._pooled = pooled
        self._counter = counter
        self.dbapi_connection = _Counting(pooled.dbapi_connection, counter)

    def cursor(self, *args: Any, **kwargs: Any) -> _Counting:
        return _Counting(self._pooled.cursor(*args, **kwargs), self._counter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pooled, name)


def _plain_fetch(connection: Any, sql: str, params: Any, limits: Any) -> tuple[Any, list]:
    """Dialect.fetch with the database's read-only layer bypassed: a plain execute, committed."""
    cursor = connection.cursor()
    try:
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        description = cursor.description
        rows = list(cursor.fetchmany(limits.rows)) if description else []
    finally:
        with contextlib.suppress(Exception):
            cursor.close()
    with contextlib.suppress(Exception):
        connection.commit()
    return description or (), rows


def _stop(dbapi_connection: Any) -> None:
    """Best effort: stop whatever runs on a connection the kit gave up waiting for."""
    for name in ("interrupt", "cancel_safe", "cancel"):
        method = getattr(dbapi_connection, name, None)
        if callable(method):
            with contextlib.suppress(Exception):
                method()
            return


# -- one runtime, and the tasks run on it ---------------------------------------------------------


@dataclass
class Outcome:
    """What one task did."""

    query: str
    output: dict[str, Any] | None = None
    error: SqlAdapterError | None = None
    #: An exception that is not a SqlAdapterError: the worker would report "internal".
    crash: BaseException | None = None
    elapsed: float = 0.0
    #: False when the kit stopped waiting for it.
    finished: bool = True
    #: The statement reached Dialect.fetch, and so the database.
    reached: bool = False
    #: The DB-API connection it ran on (the last, if it was retried on another).
    connection: Any = None
    #: Rows read from the driver, when the session counts them.
    rows_read: int = 0

    @property
    def rows(self) -> list[Any]:
        return (self.output or {}).get("rows", [])

    def describe(self) -> str:
        if not self.finished:
            return f"still running after {self.elapsed:.1f} s"
        if self.crash is not None:
            return f"{type(self.crash).__name__}: {self.crash}"
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error.message}"
        return f"rows {str(self.rows)[:200]}"


class Session:
    """A Runtime of the kit's, whose tasks run one at a time on one thread of their own.

    One thread, so that a connection the dialect lets a thread keep serves the next task, as in
    a worker; tasks are waited for with a bound, so that a plugin without a deadline fails the
    check instead of hanging the suite.
    """

    def __init__(self, kit: Kit, runtime: Runtime, *, count_rows: bool, guard_on: bool, database_layer: bool) -> None:
        self.kit = kit
        self.rt = runtime
        self.database = kit.database
        name = self.database.dialect
        dialect = runtime.registry.by_name.get(name)
        if dialect is None:
            runtime.close()
            pytest.fail(
                f"the dialect {name!r} is not registered; registered: {runtime.registry.describe() or 'none'} "
                "(is the plugin installed, with its entry point in the 'sqladapter' group?)",
                pytrace=False,
            )
        self.dialect = dialect
        self.counter = RowCounter() if count_rows else None
        self.calls: list[Any] = []  # DB-API connection of each Dialect.fetch call, in order
        self.active: set[int] = set()
        self._connections: dict[int, Any] = {}
        self._executor = self._new_executor()
        self._restore: list[Callable[[], None]] = []
        self.inner_fetch: Callable[..., Any] = dialect.fetch
        if not database_layer:
            self._bypass_database_layer()
        self._spy()
        self._guard_patched = 0
        if not guard_on:
            self._patch_guard()

    @staticmethod
    def _new_executor() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqladapter-kit-task")

    def _set(self, name: str, value: Any) -> None:
        dialect = self.dialect
        had = name in vars(dialect)
        old = vars(dialect).get(name)
        setattr(dialect, name, value)
        self._restore.append(lambda: setattr(dialect, name, old) if had else delattr(dialect, name))

    def _spy(self) -> None:
        session = self

        def fetch(connection: Any, sql: str, params: Any, limits: Any) -> Any:
            raw = connection.dbapi_connection
            session.calls.append(raw)
            session._connections[id(raw)] = raw
            session.active.add(id(raw))
            target = connection if session.counter is None else _CountingPooled(connection, session.counter)
            try:
                return session.inner_fetch(target, sql, params, limits)
            finally:
                session.active.discard(id(raw))

        self._set("fetch", fetch)

    def _bypass_database_layer(self) -> None:
        # Engines made read-write (the dialect's read-only session setup is skipped), and the
        # dialect's own fetch, with whatever it re-checks before a query, replaced by a plain
        # execute that commits.
        create = self.dialect.create_engine

        def create_engine(url: Any, *, read_only: bool) -> Any:
            return create(url, read_only=False)

        self._set("create_engine", create_engine)
        self.inner_fetch = _plain_fetch

    def _patch_guard(self) -> None:
        if self._guard_patched == 0:
            self._original_check = guard.check
            guard.check = _approve
        self._guard_patched += 1

    def _unpatch_guard(self) -> None:
        self._guard_patched -= 1
        if self._guard_patched == 0:
            guard.check = self._original_check
            # A statement checked with the guard off must not stay cached as checked.
            self.rt.statements.clear()

    @contextlib.contextmanager
    def guard_bypassed(self) -> Iterator[None]:
        """guard.check approves everything inside the block (the statement cache is cleared after)."""
        self._patch_guard()
        try:
            yield
        finally:
            self._unpatch_guard()

    def attempt(self, query: str, *, wait: float | None = None, **fields: Any) -> Outcome:
        """Run one task; an Outcome, whatever happened. Waits at most `wait` seconds."""
        fields.setdefault("timeout_ms", QUICK_TIMEOUT_MS)
        if "connection" not in fields:
            fields.setdefault("connection_string", self.database.connection_string)
        if wait is None:
            asked = fields["timeout_ms"]
            if type(asked) is not int or asked < 1:  # junk input: the default or a parse error
                asked = max(QUICK_TIMEOUT_MS, self.rt.settings.default_timeout_ms)
            wait = promise(min(asked, self.rt.settings.max_timeout_ms)) + 5.0
        task = {**fields, "query": query}
        if self.counter is not None:
            self.counter.rows = 0
        calls = len(self.calls)
        started = time.monotonic()
        future = self._executor.submit(self.rt.run, task)
        outcome = Outcome(query)
        try:
            outcome.output = future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            outcome.finished = False
            self._abandon()
        except SqlAdapterError as exc:
            outcome.error = exc
        except Exception as exc:  # the worker would report it as "internal"
            outcome.crash = exc
        outcome.elapsed = time.monotonic() - started
        reached = self.calls[calls:]
        outcome.reached = bool(reached)
        outcome.connection = reached[-1] if reached else None
        if self.counter is not None:
            outcome.rows_read = self.counter.rows
        return outcome

    def run_here(self, query: str, **fields: Any) -> dict[str, Any]:
        """Run one task on the calling thread, unbounded: for checks that run tasks from threads
        of their own and watch them."""
        fields.setdefault("connection_string", self.database.connection_string)
        return self.rt.run({**fields, "query": query})

    def run(self, query: str, **fields: Any) -> dict[str, Any]:
        """Run one task that must succeed; its output."""
        outcome = self.attempt(query, **fields)
        if outcome.output is None:
            pytest.fail(
                f"{self.database.dialect}: the kit's own query {query[:120]!r} failed: {outcome.describe()}", pytrace=False
            )
        return outcome.output

    def _abandon(self) -> None:
        # The task's thread stays inside the driver: stop what can be stopped, and give the
        # session a new thread (and so new connections) for its next tasks.
        for key in list(self.active):
            _stop(self._connections[key])
        self._executor.shutdown(wait=False)
        self._executor = self._new_executor()

    def stop_active(self) -> None:
        for key in list(self.active):
            _stop(self._connections[key])

    def close(self) -> None:
        while self._guard_patched:
            self._unpatch_guard()
        self.stop_active()
        self._executor.shutdown(wait=False)
        self.rt.close()
        for restore in reversed(self._restore):
            restore()


# -- the kit: one per test ------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(key: str) -> Iterator[None]:
    """Hold the database for this process alone: two runs recreating its tables at once would
    see each other's changes as leaks. A second run waits here."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    with open(os.path.join(tempfile.gettempdir(), f"sqladapter-kit-{digest}.lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Kit:
    """What a conformance test works with: the plugin's Database, and sessions on it."""

    database: Database
    request: Any
    _open: int = 0
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self) -> Kit:
        self._stack.enter_context(_exclusive(self.database.connection_string + str(self.database.data_dir)))
        try:
            database = self.database
            # After a check that found a write getting through (or ended before it could say),
            # the tables are looked at again, and made again if they changed.
            if not database._prepared or (database._suspect and not self.intact()):
                self.prepare()
            database._suspect = False
        except BaseException:
            self._stack.close()
            raise
        return self

    @contextlib.contextmanager
    def trying_writes(self) -> Iterator[None]:
        """Around a check that sends writes: unless it ends with the tables as they were, the
        next check looks at them first."""
        self.database._suspect = True
        yield
        self.database._suspect = False

    def finish(self) -> None:
        self._stack.close()

    # -- sessions --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(
        self,
        *,
        count_rows: bool = False,
        guard: bool = True,
        database_layer: bool = True,
        environ: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> Iterator[Session]:
        """A new Runtime on the database, closed after the block.

        `guard=False` makes guard.check approve every statement; `database_layer=False` makes
        the dialect's engines read-write and its fetch a plain execute that commits.
        """
        made = Settings(data_dir=self.database.data_dir, **settings)
        env = dict(os.environ)
        env.update(environ or {})
        session = Session(
            self,
            _runtime(made, self.database.plugin_manager, env),
            count_rows=count_rows,
            guard_on=guard,
            database_layer=database_layer,
        )
        self._open += 1
        try:
            yield session
        finally:
            self._open -= 1
            session.close()

    # -- the raw driver ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def raw(self) -> Iterator[Any]:
        """A raw connection of the plugin's driver, closed after the block."""
        if self._open and not self.database.raw_while_connected:
            raise AssertionError("the kit opened a raw connection while a session was open")
        connection = self._raw_connect()
        try:
            yield connection
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _raw_connect(self) -> Any:
        if self.database.raw_while_connected:
            return self.database.raw_connect()
        # A file database may still be held open by a call a closed runtime gave up on (past its
        # deadline): it lets go once that call ends.
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.database.raw_connect()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @contextlib.contextmanager
    def raw_beside_session(self) -> Iterator[Any]:
        """A raw connection to use while a session is open, or None where the database refuses one."""
        if not self.database.raw_while_connected:
            yield None
            return
        with self.raw() as connection:
            yield connection

    @staticmethod
    def read(raw: Any, sql: str) -> list[tuple[Any, ...]]:
        """Rows of `sql`, read fresh (never from a transaction's old snapshot)."""
        with contextlib.suppress(Exception):
            raw.rollback()
        cursor = raw.cursor()
        try:
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    @staticmethod
    def execute(raw: Any, *statements: str) -> None:
        cursor = raw.cursor()
        try:
            for sql in statements:
                cursor.execute(sql)
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
        with contextlib.suppress(Exception):
            raw.commit()

    def _exists(self, raw: Any, table: str) -> bool:
        try:
            self.read(raw, f"SELECT count(*) FROM {table}")
        except Exception:
            with contextlib.suppress(Exception):
                raw.rollback()
            return False
        return True

    def prepare(self) -> None:
        """(Re)create the kit's tables through the raw driver."""
        people = ", ".join(
            "(" + ", ".join("'" + str(person[c]).replace("'", "''") + "'" for c in PEOPLE_COLUMNS) + ")"
            for person in tutorial_people()
        )
        wide = "'" + "x" * WIDE_WIDTH + "'"
        with self.raw() as raw:
            self.execute(raw, *(f"DROP TABLE IF EXISTS {table}" for table in KIT_TABLES))
            self.execute(
                raw,
                "CREATE TABLE numbers (n INTEGER)",
                "INSERT INTO numbers (n) VALUES " + ", ".join(f"({n})" for n in NUMBERS),
                "CREATE TABLE people (name VARCHAR(100), surname VARCHAR(100), birth_date VARCHAR(10), zip_code VARCHAR(5))",
                f"INSERT INTO people ({', '.join(PEOPLE_COLUMNS)}) VALUES {people}",
                "CREATE TABLE audit (id INTEGER PRIMARY KEY, note VARCHAR(50))",
                "INSERT INTO audit (id, note) VALUES (1, 'created')",
                "CREATE TABLE kit_rows (id INTEGER, label VARCHAR(20))",
                "INSERT INTO kit_rows (id, label) SELECT a.n + 10 * (b.n - 1) + 100 * (c.n - 1) + 1000 * (d.n - 1), 'row' "
                "FROM numbers a, numbers b, numbers c, numbers d",
                "CREATE TABLE kit_wide (id INTEGER, v TEXT)",
                f"INSERT INTO kit_wide (id, v) SELECT a.n + 10 * (b.n - 1) + 100 * (c.n - 1), {wide} "
                f"FROM numbers a, numbers b, numbers c WHERE c.n <= {WIDE_ROWS // 100}",
            )
            count = self.read(raw, "SELECT count(*) FROM kit_rows")[0][0]
            if count != KIT_ROWS:
                pytest.fail(f"the kit could not fill kit_rows through raw_connect: {count} rows", pytrace=False)
        self.database._prepared = True

    def _rows_or_missing(self, raw: Any, sql: str) -> Any:
        try:
            return sorted(self.read(raw, sql))
        except Exception as exc:  # the table is gone: a write got through
            with contextlib.suppress(Exception):
                raw.rollback()
            return f"unreadable: {type(exc).__name__}"

    def tables(self, raw: Any) -> dict[str, Any]:
        """What the kit's small tables hold, and whether a table a write would create exists."""
        return {
            "numbers": self._rows_or_missing(raw, "SELECT n FROM numbers"),
            "people": self._rows_or_missing(raw, f"SELECT {', '.join(PEOPLE_COLUMNS)} FROM people"),
            "audit": self._rows_or_missing(raw, "SELECT id, note FROM audit"),
            "kit_rows": self._rows_or_missing(raw, "SELECT count(*), sum(id) FROM kit_rows"),
            "kit_sneaky exists": self._exists(raw, "kit_sneaky"),
        }

    def intact(self) -> bool:
        """Whether the kit's tables hold what prepare() put there (an earlier check may have
        found a plugin that let a write through)."""
        with self.raw() as raw:
            tables = self.tables(raw)
            wide = self._rows_or_missing(raw, "SELECT count(*) FROM kit_wide")
        return (
            tables["numbers"] == [(n,) for n in NUMBERS]
            and len(tables["people"]) == 5
            and tables["audit"] == [(1, "created")]
            and tables["kit_rows"] == [(KIT_ROWS, KIT_ROWS * (KIT_ROWS + 1) // 2)]
            and not tables["kit_sneaky exists"]
            and wide == [(WIDE_ROWS,)]
        )

    def state(self, raw: Any) -> Any:
        """The plugin's `Database.state`, or what it raised (a write got through and broke it)."""
        state = self.database.state
        if state is None:
            return None
        try:
            return state(raw)
        except Exception as exc:
            with contextlib.suppress(Exception):
                raw.rollback()
            return f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def numbers(self, raw: Any) -> list[int]:
        return [row[0] for row in self._rows_or_missing(raw, "SELECT n FROM numbers") if isinstance(row, tuple)]

    def files(self, *, digest: bool) -> dict[str, Any]:
        """The files of the data directory: their digests, or (cheaper) sizes and change times."""
        found: dict[str, Any] = {}
        for path in sorted(Path(self.database.data_dir).rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            name = str(path.relative_to(self.database.data_dir))
            if digest:
                found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                stat = path.stat()
                found[name] = (stat.st_size, stat.st_mtime_ns)
        return found

    def snapshot(self, raw: Any = None, outside: Any = None, *, digest: bool = True) -> dict[str, Any]:
        """Everything the kit can see a statement change, read without sqladapter.

        With no raw connection given, one is opened if the database allows it now.
        """
        snap: dict[str, Any] = {}
        if raw is None and (not self._open or self.database.raw_while_connected):
            with self.raw() as opened:
                return self.snapshot(opened, outside, digest=digest)
        if raw is not None:
            snap["tables"] = self.tables(raw)
            if self.database.state is not None:
                snap["state"] = self.state(raw)
        snap["files"] = self.files(digest=digest)
        if outside is not None:
            snap["outside"] = outside.listing()
        return snap


def difference(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What changed between two snapshots, in a few words."""
    parts = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            parts.append(f"{key}: {', '.join(map(str, changed))}")
        else:
            parts.append(key)
    return "; ".join(parts) or "nothing"


def in_threads(count: int, work: Callable[[], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=work, daemon=True, name=f"sqladapter-kit-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def report(config: Any, lines: list[str]) -> None:
    """Print figures under the test progress, uncaptured."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not lines:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
