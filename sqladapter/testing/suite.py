"""`DialectSuite`: the checks every dialect plugin must pass, written once.

Each test takes the `kit` fixture (made from the plugin's `database` fixture) and checks one
property by its effect: writes are looked for with the plugin's raw driver, rows are counted
where the driver hands them over, time is measured from outside. A failure names the missing
property first ("the database-level read-only layer is missing: ...", "no deadline: ...").
"""

from __future__ import annotations

import functools
import json
import math
import random
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any, Iterator

import pytest
from sqlalchemy.engine import make_url

from ..errors import (
    ConnectionConfigError,
    DatabaseUnavailableError,
    NotReadOnlyError,
    PermissionDeniedError,
    QueryError,
    QueryTimeoutError,
    SqlAdapterError,
)
from . import hostile
from ._kit import (
    KIT_ROWS,
    NUMBERS,
    WIDE_ROWS,
    WIDE_WIDTH,
    Kit,
    Outcome,
    difference,
    in_threads,
    label,
    promise,
    report,
)
from .contract import KINDS, alias, matches

__all__ = ["DialectSuite"]

#: The writes every database must refuse, on the kit's `numbers` table.
WRITES = (
    "INSERT INTO numbers (n) VALUES (11)",
    "UPDATE numbers SET n = n + 100",
    "DELETE FROM numbers WHERE n = 1",
    "CREATE TABLE kit_sneaky (i INTEGER)",
    "DROP TABLE numbers",
)
INSERT = WRITES[0]

MISSING_DATABASE_LAYER = "the database-level read-only layer is missing"
MISSING_GUARD = "the guard (sqladapter's read-only check) is missing"

#: timeout_ms of hostile statements: short enough to keep the run quick, long enough that a
#: refused statement never reaches it.
HOSTILE_TIMEOUT_MS = 1500
#: timeout_ms of the state checks, so the probe shows the limit each task sets again.
STATE_TIMEOUT_MS = 1234
#: The output budget of the budget check: the wide table's result is 40 times this.
BUDGET = 100_000

PARAMETER_VALUES = [
    "x' OR '1'='1",
    "\\'; DELETE FROM numbers; --",
    "--\u00a0, GET_LOCK('sqla', 0)",
    "%s %(x)s %% $1 ? :name",
    "/*! SELECT 1 */",
    "\u2028\u00a0\u3000 end",
    "é漢字🙂",
    "\\",
    "'",
]

# Pieces of task input that no worker should choke on.
SQL_PIECES = [
    "SELECT",
    "*",
    "FROM",
    "numbers",
    "people",
    "WHERE",
    "n",
    "=",
    ":n",
    "?",
    "(",
    ")",
    ",",
    "'",
    '"',
    "`",
    "--",
    "/*",
    "*/",
    ";",
    "1",
    "NULL",
    'U&"x"',
    "\u00a0",
    "\x00",
    "LIMIT",
    "UNION",
    "WITH",
    "AS",
    "x",
    "$1",
    "@v",
    "json_extract(",
    "NOT",
    "\\",
    "%s",
    "\u2028",
    "::",
    "[",
    "]",
    "{",
    "}",
    "CASE",
    "END",
    "||",
    "E'",
    "$$",
]
DEEP_QUERIES = {
    "parentheses": "SELECT " + "(" * 3000 + "1" + ")" * 3000,
    "not": "SELECT " + "NOT " * 30_000 + "1",
    "minus": "SELECT " + "-" * 50_000 + "1",
    "long sum": "SELECT " + " + ".join(["1"] * 20_000),
    "case": "SELECT " + "CASE WHEN 1 THEN " * 3000 + "1" + " END" * 3000,
}


def _fail(header: str, problems: list[str], limit: int = 25) -> None:
    shown = problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    pytest.fail(header + ":\n  " + "\n  ".join(shown) + more, pytrace=False)


def _needs(kit: Kit, field: str, why: str) -> Any:
    value = getattr(kit.database, field)
    if not value:
        pytest.skip(f"{kit.database.dialect}: Database.{field} is not given ({why})")
    return value


def _says_read_only(message: str) -> bool:
    lowered = message.lower()
    return "read-only" in lowered or "read only" in lowered or "readonly" in lowered


def _check_bypasses_work(kit: Kit) -> None:
    """With both layers bypassed a write must land, and the raw driver must see it: else the
    read-only checks below would pass for a plugin whatever it does."""
    database = kit.database
    if database._bypass_checked:
        return
    with kit.session(guard=False, database_layer=False) as session:
        outcome = session.attempt(INSERT)
    with kit.raw() as raw:
        numbers = kit.numbers(raw)
        if 11 not in numbers:
            pytest.fail(
                "the kit cannot check this plugin's read-only layers: with both the guard and the database layer "
                f"bypassed, {INSERT!r} did not change `numbers` as raw_connect reads it ({outcome.describe()}); "
                "raw_connect must open the same database the connection string names, and see committed writes",
                pytrace=False,
            )
        kit.execute(raw, "DELETE FROM numbers WHERE n = 11")
    database._bypass_checked = True


def _tries_writes(test: Any) -> Any:
    """For a check that sends statements which could change the database: unless it passes, the
    next check first looks whether the kit's tables are as they were."""

    @functools.wraps(test)
    def check(self: Any, kit: Kit) -> Any:
        with kit.trying_writes():
            return test(self, kit)

    return check


class DialectSuite:
    """The conformance checks for one dialect plugin. Subclass it and give a `database` fixture.

    Test classes named Test* that inherit from it are collected by pytest; this class itself
    is not. Every check is a method taking the one fixture `kit`, so a plugin can override a
    single check (to mark a known gap) and call `super()`.
    """

    @pytest.fixture
    def kit(self, database, request) -> Iterator[Kit]:
        """The kit for one check: the plugin's `database`, its tables made, held for this run alone."""
        made = Kit(database, request).start()
        try:
            yield made
        finally:
            made.finish()

    # -- queries, parameters, limits ----------------------------------------------------------------

    def test_a_query_returns_its_rows_columns_and_dialect(self, kit):
        with kit.session() as s:
            out = s.run("SELECT n FROM numbers ORDER BY n")
        problems = []
        if out["rows"] != [{"n": n} for n in NUMBERS]:
            problems.append(f"rows: {out['rows']}")
        if [c["name"] for c in out["columns"]] != ["n"]:
            problems.append(f"columns: {out['columns']}")
        if (out["rowCount"], out["truncated"]) != (10, False):
            problems.append(f"rowCount {out['rowCount']}, truncated {out['truncated']}")
        if out["dialect"] != kit.database.dialect:
            problems.append(f"dialect {out['dialect']!r}")
        if problems:
            _fail("SELECT n FROM numbers ORDER BY n came back wrong", problems)

    def test_parameters_are_bound_as_values(self, kit):
        hostile_value = "it's 100% ' OR '1'='1"
        checks: list[tuple[str, Any, list[Any]]] = [
            (
                "SELECT n FROM numbers WHERE n BETWEEN :low AND :high ORDER BY n",
                {"low": 3, "high": 5},
                [{"n": 3}, {"n": 4}, {"n": 5}],
            ),
            ("SELECT n FROM numbers WHERE n = :v OR n = :v + 1 ORDER BY n", {"v": 4}, [{"n": 4}, {"n": 5}]),
            ("SELECT n FROM numbers WHERE n IN (?, ?) ORDER BY n", [2, 7], [{"n": 2}, {"n": 7}]),
            (
                "SELECT '5%' AS pct, :v AS v, count(*) AS c FROM numbers WHERE n = :n",
                {"v": hostile_value, "n": 3},
                [{"pct": "5%", "v": hostile_value, "c": 1}],
            ),
            # Placeholders after non-ASCII text: a scanner counting bytes would miss them.
            ("SELECT 'é漢🙂' AS a, :x AS b", {"x": "z"}, [{"a": "é漢🙂", "b": "z"}]),
            ("SELECT 'ü' AS a, ? AS b", [7], [{"a": "ü", "b": 7}]),
        ]
        for value in PARAMETER_VALUES:
            checks.append(("SELECT :v AS v", {"v": value}, [{"v": value}]))
            checks.append(("SELECT ? AS v, ? AS w", [value, 7], [{"v": value, "w": 7}]))
        problems = []
        with kit.session() as s:
            for sql, parameters, expected in checks:
                outcome = s.attempt(sql, parameters=parameters)
                if outcome.output is None or outcome.rows != expected:
                    problems.append(f"{sql!r} with {parameters!r}: {outcome.describe()}, expected {expected}")
            if s.run("SELECT count(*) AS c FROM numbers", fetch="value")["value"] != 10:
                problems.append("numbers changed")
        if problems:
            _fail("a parameter was not bound as a value", problems)

    def test_max_rows_fetch_modes_and_shapes(self, kit):
        problems = []

        def expect(what: str, got: Any, wanted: Any) -> None:
            if got != wanted:
                problems.append(f"{what}: got {got!r}, expected {wanted!r}")

        with kit.session() as s:
            out = s.run("SELECT n FROM numbers ORDER BY n", max_rows=10)
            expect("max_rows 10 of 10 rows", (out["rowCount"], out["truncated"]), (10, False))
            out = s.run("SELECT n FROM numbers ORDER BY n", max_rows=9)
            expect(
                "max_rows 9 of 10 rows",
                ([r["n"] for r in out["rows"]], out["rowCount"], out["truncated"]),
                (NUMBERS[:9], 9, True),
            )
            out = s.run("SELECT n, n * 2 AS twice FROM numbers WHERE n > :n ORDER BY n", parameters={"n": 3}, fetch="one")
            expect("fetch one", (out["row"], "rows" in out, out["rowCount"]), ({"n": 4, "twice": 8}, False, 1))
            expect("fetch value", s.run("SELECT count(*) AS c FROM numbers", fetch="value")["value"], 10)
            empty = "SELECT n FROM numbers WHERE n > 100"
            expect("fetch one of nothing", s.run(empty, fetch="one")["row"], None)
            expect("fetch value of nothing", s.run(empty, fetch="value")["value"], None)
            out = s.run("SELECT n, n + 1 AS m FROM numbers WHERE n <= 2 ORDER BY n", shape="arrays")
            expect("shape arrays", out["rows"], [[1, 2], [2, 3]])
        if problems:
            _fail("max_rows, fetch or shape came back wrong", problems)

    # -- read-only, twice over ----------------------------------------------------------------------

    @_tries_writes
    def test_the_database_refuses_writes_when_the_guard_is_bypassed(self, kit):
        """guard.check approves everything: only the database's own read-only session stands in the way."""
        _check_bypasses_work(kit)
        database = kit.database
        problems: list[str] = []
        before = kit.snapshot()
        with kit.session(guard=False) as s, kit.raw_beside_session() as raw:

            def judge(sql: str, outcome: Outcome, context: str = "") -> None:
                nonlocal before
                what = f"{label(sql)} with the guard bypassed{context}"
                if outcome.finished and outcome.reached and outcome.error is None and outcome.crash is None:
                    s.attempt("COMMIT")  # what a second task would send to keep the write
                changed = None
                if raw is not None:
                    after = kit.snapshot(raw)
                    if after != before:
                        changed = difference(before, after)
                        kit.prepare()
                        before = kit.snapshot(raw)
                if not outcome.finished or outcome.crash is not None:
                    problems.append(f"{what} ended badly: {outcome.describe()} ({sql})")
                elif not outcome.reached:
                    problems.append(
                        f"the kit cannot check the database layer: {what} never reached the database "
                        f"({outcome.describe()}); does the plugin's compile call sqladapter.guard.check? ({sql})"
                    )
                elif outcome.error is None:
                    problems.append(f"{MISSING_DATABASE_LAYER}: {what} was accepted by the database ({sql})")
                elif changed is None and not (
                    isinstance(outcome.error, PermissionDeniedError)
                    and not outcome.error.retryable
                    and _says_read_only(outcome.error.message)
                ):
                    problems.append(
                        f"the database did not refuse {what} as read-only: it ended in {outcome.describe()}; a write "
                        f"the database refuses must be a terminal PermissionDeniedError saying read-only ({sql})"
                    )
                if changed is not None:
                    problems.append(f"{MISSING_DATABASE_LAYER}: {what} changed the table ({changed}; {sql})")

            for sql in (*WRITES, *database.database_refuses):
                judge(sql, s.attempt(sql))
            probe = s.attempt(database.probe) if database.read_only_off else None
            for switch in database.read_only_off:
                off = s.attempt(switch)
                if not off.reached:
                    problems.append(f"the kit cannot check {switch!r}: it never reached the database ({off.describe()})")
                judge(INSERT, s.attempt(INSERT), f" after {switch!r} on the same session")
                again = s.attempt(database.probe)
                if probe is not None and again.rows != probe.rows:
                    problems.append(
                        f"{MISSING_DATABASE_LAYER} for the next task: after {switch!r} the session answers the probe "
                        f"with {again.describe()} instead of {probe.rows}"
                    )
        if raw is None:
            after = kit.snapshot()
            if after != before:
                problems.append(
                    f"{MISSING_DATABASE_LAYER}: a write with the guard bypassed changed the table ({difference(before, after)})"
                )
                kit.prepare()
        if problems:
            _fail(f"{database.dialect}: writes with the guard bypassed", problems)

    @_tries_writes
    def test_the_guard_refuses_writes_when_the_database_layer_is_bypassed(self, kit):
        """The database's read-only session is gone (read-write engine, plain execute that commits):
        only the guard stands in the way."""
        _check_bypasses_work(kit)
        database = kit.database
        problems: list[str] = []
        before = kit.snapshot()
        with kit.session(database_layer=False) as s, kit.raw_beside_session() as raw:
            for sql in (*WRITES, *database.guard_refuses):
                outcome = s.attempt(sql)
                what = f"{label(sql)} with the database's read-only layer bypassed"
                expected = NotReadOnlyError if sql in WRITES else (NotReadOnlyError, QueryError)
                if outcome.reached:
                    problems.append(f"{MISSING_GUARD}: {what} reached the database ({outcome.describe()}; {sql})")
                elif outcome.error is None:
                    problems.append(f"{MISSING_GUARD}: {what} ended {outcome.describe()} ({sql})")
                elif not isinstance(outcome.error, expected) or outcome.error.retryable:
                    problems.append(
                        f"the guard refused {what} as {outcome.describe()}: it must be a terminal NotReadOnlyError ({sql})"
                    )
                if raw is not None:
                    after = kit.snapshot(raw)
                    if after != before:
                        problems.append(f"{MISSING_GUARD}: {what} changed the table ({difference(before, after)}; {sql})")
                        kit.prepare()
                        before = kit.snapshot(raw)
        if raw is None:
            after = kit.snapshot()
            if after != before:
                problems.append(f"{MISSING_GUARD}: a write changed the table ({difference(before, after)})")
                kit.prepare()
        if problems:
            _fail(f"{database.dialect}: writes with the database's read-only layer bypassed", problems)

    @_tries_writes
    def test_hostile_statements_are_refused_and_change_nothing(self, kit):
        """Every statement of the hostile corpus with one of the dialect's tags: a terminal error (a
        retryable time-limit error for runaway work), nothing changed in the database or the files
        outside, the pooled session as it was, and the secret file's text in no message."""
        database = kit.database
        entries = hostile.applicable(database.tags)
        if not entries:
            pytest.skip(f"{database.dialect}: no hostile statement has one of the tags {database.tags}")
        outside = hostile.make_outside()
        escape = database.data_dir / "escape.txt"
        escape.symlink_to(outside.secret)
        server_database = make_url(database.connection_string).database if "://" in database.connection_string else ""
        problems: list[str] = []
        tally: Counter[str] = Counter()
        try:
            start = kit.snapshot(outside=outside)
            with kit.session() as s, kit.raw_beside_session() as raw:
                before = kit.snapshot(raw, outside, digest=False)
                probe = s.run(database.probe)["rows"]
                for entry in entries:
                    sql = hostile.render(entry["sql"], outside, database.data_dir, server_database or "")
                    why = entry["why"]
                    outcome = s.attempt(sql, timeout_ms=HOSTILE_TIMEOUT_MS, wait=promise(HOSTILE_TIMEOUT_MS) + 1)
                    problem = self._hostile_problem(database.dialect, entry, sql, outcome, outside.marker)
                    if problem:
                        problems.append(problem)
                        tally["got through or misreported"] += 1
                    elif entry["expect"] == "timeout":
                        tally["stopped by the time limit"] += 1
                    else:
                        tally["refused by the database" if outcome.reached else "refused by the guard"] += 1
                    after_probe = s.attempt(database.probe)
                    if after_probe.output is None or after_probe.rows != probe:
                        problems.append(
                            f"{why}: {sql!r} changed the pooled session: the probe answered "
                            f"{after_probe.describe()} instead of {probe}"
                        )
                    after = kit.snapshot(raw, outside, digest=False)
                    if after != before:
                        problems.append(f"{why}: {sql!r} changed {difference(before, after)}")
                        before = after
            end = kit.snapshot(outside=outside)
            if end != start:
                problems.append(f"the hostile statements changed {difference(start, end)}")
        finally:
            escape.unlink()
            outside.remove()
            if problems:
                kit.prepare()
        report(
            kit.request.config,
            [
                f"hostile SQL on {database.dialect}: {sum(tally.values())} statements tried, "
                + ", ".join(f"{n} {kind}" for kind, n in sorted(tally.items()))
            ],
        )
        if problems:
            _fail(f"{database.dialect}: hostile statements got through ({len(problems)})", problems)

    @staticmethod
    def _hostile_problem(dialect: str, entry: dict, sql: str, outcome: Outcome, marker: str) -> str | None:
        why = entry["why"]
        if not outcome.finished:
            return f"no deadline: {why}: {sql!r} was still running {outcome.elapsed:.1f} s after it started (timeout_ms={HOSTILE_TIMEOUT_MS})"
        if outcome.crash is not None:
            return f"{why}: {sql!r} ended in {outcome.describe()}, not a sqladapter error (the worker reports 'internal')"
        error = outcome.error
        if error is None:
            return (
                f"hostile statement got through: {why}: {sql!r} ran on {dialect} and returned {json.dumps(outcome.output)[:300]}"
            )
        if entry["expect"] == "timeout":
            if not (isinstance(error, QueryTimeoutError) and error.retryable):
                return f"{why}: {sql!r}: expected a retryable time-limit error, got {outcome.describe()}"
        elif error.retryable:
            return f"{why}: {sql!r}: expected a terminal error, got {outcome.describe()}"
        if marker in error.message:
            return f"{why}: {sql!r}: the error message shows the secret file's text"
        if not error.message.strip():
            return f"{why}: {sql!r}: the error message is empty"
        return None

    @_tries_writes
    def test_task_input_cannot_configure_the_connection(self, kit):
        strings = _needs(kit, "refused_connection_strings", "inline connection strings with options task input must not set")
        problems = []
        before = kit.snapshot()
        with kit.session() as s:
            for text in strings:
                outcome = s.attempt("SELECT 1 AS one", connection_string=text)
                error = outcome.error
                if not isinstance(error, ConnectionConfigError) or error.retryable or "named connection" not in error.message:
                    problems.append(
                        f"{text}: {outcome.describe()}; expected a terminal ConnectionConfigError pointing to a named connection"
                    )
                    continue
                raw_query = text.split("?", 1)[1] if "?" in text else ""
                for key, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
                    if key not in error.message:
                        problems.append(f"{text}: the message does not name the option {key!r}: {error.message}")
                    encoded = raw_query.split(f"{key}=", 1)[-1].split("&", 1)[0]
                    for shown in {value, encoded}:
                        if len(shown) >= 3 and shown in error.message:
                            problems.append(f"{text}: the message repeats the option's value {shown!r}")
                if outcome.reached:
                    problems.append(f"{text}: a query ran on it")
        after = kit.snapshot()
        if after != before:
            problems.append(f"the refused connection strings changed {difference(before, after)}")
        if problems:
            _fail(f"{kit.database.dialect}: task input configured a connection", problems)

    # -- memory: rows read, output budget ----------------------------------------------------------

    def test_at_most_max_rows_plus_one_rows_cross_from_the_driver(self, kit):
        problems = []

        def expect(what: str, outcome: Outcome, rows: int, check: Any, *, look_ahead: int = 0) -> None:
            if outcome.output is None:
                problems.append(f"{what}: {outcome.describe()}")
                return
            if not check(outcome.output):
                problems.append(f"{what}: the output is wrong: {json.dumps(outcome.output)[:300]}")
            if not rows <= outcome.rows_read <= rows + look_ahead:
                allowed = f"exactly {rows}" if not look_ahead else f"{rows} to {rows + look_ahead}"
                problems.append(
                    f"no row limit: {what} read {outcome.rows_read} rows from the driver; {allowed} "
                    "(max_rows + 1, or the rows there are) may cross"
                )

        big = "SELECT a.n AS n FROM numbers a, numbers b, numbers c, numbers d, numbers e, numbers f"
        with kit.session(count_rows=True) as s:
            outcome = s.attempt("SELECT * FROM kit_rows ORDER BY id")
            expect(
                f"SELECT * over {KIT_ROWS} rows with the default max_rows 1000",
                outcome,
                1001,
                lambda out: out["rowCount"] == 1000 and out["truncated"] is True and out["rows"][-1]["id"] == 1000,
            )
            outcome = s.attempt("SELECT * FROM kit_rows", max_rows=10)
            expect("max_rows 10", outcome, 11, lambda out: out["rowCount"] == 10 and out["truncated"] is True)
            # Again on the same connection: nothing left over from the query before.
            outcome = s.attempt("SELECT id FROM kit_rows ORDER BY id", max_rows=3)
            expect("max_rows 3 next", outcome, 4, lambda out: [r["id"] for r in out["rows"]] == [1, 2, 3])
            outcome = s.attempt("SELECT id FROM kit_rows ORDER BY id", fetch="one")
            expect("fetch one", outcome, 2, lambda out: out["row"] == {"id": 1})
            for sql in (big, big + " LIMIT 1000000"):
                outcome = s.attempt(sql, max_rows=5)
                # A fetch may look one row further to learn that the result goes on (and then
                # stop the query rather than read the rest).
                expect(
                    f"a million-row cross join{' with its own LIMIT' if 'LIMIT' in sql else ''}",
                    outcome,
                    6,
                    lambda out: out["rowCount"] == 5 and out["truncated"] is True,
                    look_ahead=1,
                )
                numbers = s.attempt("SELECT n FROM numbers ORDER BY n")
                if [r["n"] for r in numbers.rows] != NUMBERS:
                    problems.append(f"the query after a million-row result failed: {numbers.describe()}")
        if problems:
            _fail(f"{kit.database.dialect}: rows read from the driver", problems)

    def test_a_result_over_the_output_budget_is_truncated_not_read_whole(self, kit):
        total = WIDE_ROWS * WIDE_WIDTH
        with kit.session(count_rows=True, max_output_bytes=BUDGET, max_rows=10_000) as s:
            outcome = s.attempt("SELECT id, v FROM kit_wide ORDER BY id", max_rows=10_000)
        problems = []
        if outcome.output is None:
            _fail(f"{kit.database.dialect}: a result over the output budget", [f"the task failed: {outcome.describe()}"])
        out = outcome.output
        size = len(json.dumps(out, separators=(",", ":")))
        if out["truncated"] is not True:
            problems.append("the output is not marked truncated")
        if size > BUDGET:
            problems.append(f"no output budget: the output is {size} bytes, over SQLADAPTER_MAX_OUTPUT_BYTES={BUDGET}")
        fits = BUDGET // WIDE_WIDTH + 1
        if out["rowCount"] > fits:
            problems.append(f"{out['rowCount']} rows came back; at most {fits} fit the budget")
        bound = max(64, 4 * fits)
        if outcome.rows_read > bound:
            problems.append(
                f"no output budget while reading: {outcome.rows_read} of {WIDE_ROWS} rows ({total // 1_000_000} MB in all) "
                f"were read from the driver for a {BUDGET}-byte budget; at most {bound} may be"
            )
        if problems:
            _fail(f"{kit.database.dialect}: a {total // 1_000_000} MB result over a {BUDGET}-byte output budget", problems)

    @_tries_writes
    def test_bad_input_is_terminal_never_internal(self, kit):
        problems = []
        # Junk may ask for any time limit: the worker's cap keeps a junk query short.
        with kit.session(max_timeout_ms=2000) as s:
            for name, query in DEEP_QUERIES.items():
                # Parsing comes before any time limit (it is bounded by the query's size): on a
                # busy machine it may take long, and that is not what this checks.
                outcome = s.attempt(query, wait=120)
                if not outcome.finished or outcome.crash is not None:
                    problems.append(f"a deep or long expression ({name}) ended as 'internal': {outcome.describe()}")
                elif outcome.error is not None and outcome.error.retryable:
                    problems.append(f"a deep or long expression ({name}) was reported retryable: {outcome.describe()}")
            for task in _junk_tasks():
                query = task.pop("query")
                outcome = s.attempt(query, wait=60, **task)
                if not outcome.finished or outcome.crash is not None:
                    problems.append(f"bad input ended as 'internal': {outcome.describe()} for {dict(task, query=query)!r}")
                elif outcome.error is not None and outcome.error.retryable and not isinstance(outcome.error, QueryTimeoutError):
                    problems.append(f"bad input was reported retryable: {outcome.describe()} for {dict(task, query=query)!r}")
            if [r["n"] for r in s.attempt("SELECT n FROM numbers ORDER BY n").rows] != NUMBERS:
                problems.append("the session did not answer a plain query after the bad input")
        if problems:
            _fail(f"{kit.database.dialect}: bad input", problems)

    # -- the JSON type contract ---------------------------------------------------------------------

    def test_values_follow_the_json_type_contract(self, kit):
        database = kit.database
        unknown = sorted(set(database.types) - KINDS.keys())
        if unknown:
            pytest.fail(
                f"Database.types names kinds the contract does not have: {unknown}; kinds: {sorted(KINDS)}", pytrace=False
            )
        columns = [(alias(k), sql, KINDS[k].expected, f"{k} ({KINDS[k].value})") for k, sql in database.types.items()]
        columns += [(alias(a), sql, expected, a) for a, (sql, expected) in database.extra_types.items()]
        if not columns:
            pytest.skip(f"{database.dialect}: Database.types is not given (the contract's kinds this database has)")
        source = f" FROM {database.types_from}" if database.types_from else ""
        query = "SELECT " + ", ".join(f"{sql} AS {name}" for name, sql, _, _ in columns) + source
        problems = []
        with kit.session() as s:
            outcome = s.attempt(query)
            if outcome.output is None:
                for name, sql, _, what in columns:
                    alone = s.attempt(f"SELECT {sql} AS {name}{source}")
                    if alone.output is None:
                        problems.append(f"{what}: {sql} failed: {alone.describe()}")
                _fail(
                    f"{database.dialect}: the type query failed ({outcome.describe()})",
                    problems or ["(each expression alone worked)"],
                )
        row = outcome.output["rows"][0]
        for name, sql, expected, what in columns:
            got = row.get(name)
            if not matches(expected, got):
                shown = getattr(expected, "__name__", json.dumps(expected, ensure_ascii=False))
                problems.append(f"{what}: {sql} came back as {json.dumps(got, ensure_ascii=False)}, the contract says {shown}")
        try:
            json.dumps(row, allow_nan=False)
        except (TypeError, ValueError) as exc:
            problems.append(f"the row is not strict JSON: {exc}")
        reported = {c["name"]: c["type"] for c in outcome.output["columns"]}
        for key, type_name in database.column_types.items():
            if reported.get(alias(key)) != type_name:
                problems.append(f"columns: {key} is reported as {reported.get(alias(key))!r}, not {type_name!r}")
        if problems:
            _fail(f"{database.dialect}: values outside the JSON type contract", problems)

    # -- state between tasks ------------------------------------------------------------------------

    @_tries_writes
    def test_no_session_state_crosses_tasks(self, kit):
        database = kit.database
        changes = _needs(kit, "state_changes", "statements that change a session's settings, temporary objects or locks")
        problems = []
        with kit.session() as s, kit.raw_beside_session() as raw:
            first = s.attempt(database.probe, timeout_ms=STATE_TIMEOUT_MS)
            if first.output is None:
                pytest.fail(f"the probe {database.probe!r} failed: {first.describe()}", pytrace=False)
            probe, connection = first.rows, first.connection
            server = kit.state(raw) if raw is not None and database.state is not None else None
            for change in changes:
                with s.guard_bypassed():
                    done = s.attempt(change, timeout_ms=STATE_TIMEOUT_MS)
                if not done.reached:
                    problems.append(f"the kit cannot check {change!r}: it never reached the database ({done.describe()})")
                after = s.attempt(database.probe, timeout_ms=STATE_TIMEOUT_MS)
                if after.output is None:
                    problems.append(
                        f"session state crossed tasks: after {change!r} (guard bypassed; {done.describe()}), the next "
                        f"task failed: {after.describe()}"
                    )
                    continue
                if after.connection is not connection:
                    problems.append(
                        f"the kit cannot check {change!r}: the next task ran on another connection than the one it "
                        "changed (was that connection closed?)"
                    )
                    connection = after.connection
                elif after.rows != probe:
                    problems.append(
                        f"session state crossed tasks: after {change!r} (guard bypassed; {done.describe()}), the next "
                        f"task on the same connection saw {after.rows} instead of {probe}"
                    )
                if server is not None:
                    now = kit.state(raw)
                    if now != server:
                        problems.append(
                            f"session state crossed tasks: after {change!r}, the next task left {difference({'state': server}, {'state': now})} "
                            "changed on the server (read with the raw driver)"
                        )
                        server = now
            # The time limit is set again for each task, never kept from the session.
            slow = s.attempt(database.slow_query, timeout_ms=STATE_TIMEOUT_MS)
            if not isinstance(slow.error, QueryTimeoutError):
                problems.append(f"no deadline after the session changes: the slow query ended {slow.describe()}")
        if problems:
            _fail(f"{database.dialect}: session state between tasks", problems)

    def test_a_session_the_server_ended_is_replaced(self, kit):
        end_session = _needs(kit, "end_session", "a way to end a server session from outside")
        problems = []
        with kit.session() as s:
            first, second = s.attempt("SELECT 1 AS one"), s.attempt("SELECT 1 AS one")
            if first.output is None or second.output is None:
                pytest.fail(f"a plain query failed: {first.describe()} / {second.describe()}", pytrace=False)
            if second.connection is not first.connection:
                problems.append("connections are not reused: two tasks in a row ran on two connections")
            end_session(first.connection)
            after = s.attempt("SELECT n FROM numbers ORDER BY n")
            if [r["n"] for r in after.rows] != NUMBERS:
                problems.append(f"after the server ended the session, the next task failed: {after.describe()}")
            elif after.connection is first.connection:
                problems.append("the next task claims to have run on the ended session")
        if problems:
            _fail(f"{kit.database.dialect}: a connection the server ended", problems)

    # -- errors -------------------------------------------------------------------------------------

    def test_errors_are_classified(self, kit):
        cases = [
            ("SELECT n FROM numbers WHERE", "a syntax error"),
            ("SELECT * FROM no_such_table", "a missing table"),
            ("SELECT no_such_column FROM numbers", "a missing column"),
        ]
        problems = []
        with kit.session() as s:
            for sql, what in cases:
                outcome = s.attempt(sql)
                if not isinstance(outcome.error, QueryError) or outcome.error.retryable:
                    problems.append(
                        f"error classification: {what} ({sql!r}) must be a terminal QueryError, got {outcome.describe()}"
                    )
            after = s.attempt("SELECT n FROM numbers ORDER BY n")
            if [r["n"] for r in after.rows] != NUMBERS:
                problems.append(f"after the failed queries the next one failed: {after.describe()}")
        if problems:
            _fail(f"{kit.database.dialect}: errors", problems)

    def test_an_unreachable_database_is_retryable(self, kit):
        unreachable = _needs(kit, "unreachable", "a connection string whose server does not answer")
        with kit.session() as s:
            outcome = s.attempt("SELECT 1 AS one", connection_string=unreachable, wait=60)
        if not isinstance(outcome.error, DatabaseUnavailableError) or not outcome.error.retryable:
            _fail(
                f"{kit.database.dialect}: an unreachable database",
                [f"error classification: it must be a retryable DatabaseUnavailableError, got {outcome.describe()}"],
            )

    @_tries_writes
    def test_refused_credentials_are_terminal_and_no_password_is_shown(self, kit):
        database = kit.database
        refused = _needs(kit, "refused_credentials", "a connection string with a password the server refuses")
        caplog = kit.request.getfixturevalue("caplog")
        caplog.set_level("DEBUG")
        environ = {"SQLADAPTER_CONNECTION_KIT_REFUSED": refused}
        urls = [refused]
        tasks = [("kit_refused", "SELECT 1 AS one")]
        if database.password_connection_string:
            working = database.password_connection_string
            url = make_url(working)
            down = url.set(port=9).render_as_string(hide_password=False) if url.host else None
            environ["SQLADAPTER_CONNECTION_KIT_SECRET"] = working
            urls.append(working)
            tasks += [("kit_secret", sql) for sql in ("SELEC 1", "SELECT * FROM no_such_table", "DELETE FROM numbers")]
            tasks.append(("kit_secret", database.slow_query))
            if down:
                environ["SQLADAPTER_CONNECTION_KIT_DOWN"] = down
                urls.append(down)
                tasks.append(("kit_down", "SELECT 1 AS one"))
        problems = []
        errors = []
        with kit.session(environ=environ) as s:
            first = s.attempt("SELECT 1 AS one", connection="kit_refused", wait=60)
            if not isinstance(first.error, PermissionDeniedError) or first.error.retryable:
                problems.append(
                    f"error classification: refused credentials must be a terminal PermissionDeniedError, got {first.describe()}"
                )
            if database.password_connection_string:
                works = s.attempt("SELECT 1 AS one", connection="kit_secret")
                if works.output is None:
                    problems.append(f"password_connection_string does not work: {works.describe()}")
            for name, sql in tasks:
                outcome = s.attempt(sql, connection=name, timeout_ms=300, wait=60)
                if outcome.error is not None:
                    errors.append(outcome.error)
                elif outcome.crash is not None:
                    problems.append(f"{name}: {sql!r} ended in {outcome.describe()}")
        needles = set()
        for text in urls:
            url = make_url(text)
            if url.password:
                needles |= {str(url.password), urllib.parse.quote(str(url.password), safe="")}
            needles |= {text, url.render_as_string(hide_password=False)}
        texts = [caplog.text, *(record.getMessage() for record in caplog.records)]
        for error in errors:
            texts += [error.message, str(error), json.dumps(error.to_dict()), repr(error.__cause__), repr(error.__context__)]
        hits = sorted({needle for needle in needles for text in texts if needle and needle in text})
        if hits:
            problems.append(f"a password or a URL with its password shows in an error or a log line: {len(hits)} of them")
        if problems:
            _fail(f"{database.dialect}: credentials", problems)

    # -- deadlines (last: an unstoppable query may leave work running in the background) -----------

    def test_a_slow_query_stops_at_its_time_limit(self, kit):
        timeout_ms = 500
        with kit.session() as s:
            outcome = s.attempt(kit.database.slow_query, timeout_ms=timeout_ms, wait=promise(timeout_ms) + 10)
            problem = _deadline_problem(outcome, timeout_ms)
            after = s.attempt("SELECT n FROM numbers ORDER BY n")
        problems = [problem] if problem else []
        if [r["n"] for r in after.rows] != NUMBERS:
            problems.append(f"the connection was not usable after the time limit: {after.describe()}")
        if problems:
            _fail(f"{kit.database.dialect}: the time limit", problems)

    def test_a_time_limit_that_ends_before_the_query_starts_still_stops_it(self, kit):
        # With 1 ms, and threads competing for the interpreter, the limit often passes before the
        # database has begun the query; it must be stopped all the same, every time.
        sql = kit.database.slow_query
        outcomes: list[str] = []
        running: dict[str, float] = {}
        stop = threading.Event()
        with kit.session() as s:

            def work() -> None:
                name = threading.current_thread().name
                for _ in range(10):
                    if stop.is_set():
                        return
                    running[name] = time.monotonic()
                    try:
                        s.run_here(sql, timeout_ms=1)
                        outcomes.append("finished")
                    except QueryTimeoutError:
                        outcomes.append("stopped")
                    except SqlAdapterError as exc:
                        outcomes.append(f"{type(exc).__name__}: {exc.message}")
                    except Exception as exc:
                        outcomes.append(f"{type(exc).__name__}: {exc} (internal)")
                    finally:
                        running.pop(name, None)

            threads = in_threads(4, work)
            late = None
            deadline = time.monotonic() + 60
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                now = time.monotonic()
                overdue = [now - started for started in list(running.values()) if now - started > promise(1)]
                if overdue:
                    late = max(overdue)
                    break
                time.sleep(0.02)
            stop.set()
            if late is not None or any(t.is_alive() for t in threads):
                s.stop_active()
                for thread in threads:
                    thread.join(5)
        if late is not None:
            _fail(
                f"{kit.database.dialect}: a 1 ms time limit",
                [f"no deadline: a query with timeout_ms=1 was still running {late:.1f} s after it started"],
            )
        if outcomes != ["stopped"] * 40:
            _fail(f"{kit.database.dialect}: a 1 ms time limit", [f"40 queries with timeout_ms=1 ended: {Counter(outcomes)}"])

    def test_a_query_the_database_does_not_stop_still_reports_on_time(self, kit):
        database = kit.database
        query = _needs(kit, "unstoppable_query", "a query the database's own time limit does not interrupt")
        timeout_ms = 300
        problems = []
        with kit.session() as s:
            outcome = s.attempt(query, timeout_ms=timeout_ms, wait=promise(timeout_ms) + 30)
            problem = _deadline_problem(outcome, timeout_ms)
            if problem:
                problems.append(problem)
            elif database.unstoppable_message and database.unstoppable_message not in outcome.error.message:
                problems.append(f"the time-limit error does not say {database.unstoppable_message!r}: {outcome.error.message}")
            report(
                kit.request.config,
                [
                    f"deadline ({database.dialect}): reported {outcome.elapsed:.2f} s after the start of a {timeout_ms} ms query "
                    f"(overrun {outcome.elapsed - timeout_ms / 1000:.2f} s; promise {promise(timeout_ms) - timeout_ms / 1000:.2f} s)"
                ],
            )
            after = s.attempt("SELECT n FROM numbers ORDER BY n")
            if [r["n"] for r in after.rows] != NUMBERS:
                problems.append(f"the next task did not get a working connection: {after.describe()}")
            if database.still_running is not None and outcome.finished:
                with kit.raw_beside_session() as raw:
                    if raw is not None:
                        left = _wait_until_gone(database.still_running, raw, 60)
                        if left:
                            problems.append(
                                f"the statement past its time limit was left running on the server: {left} still "
                                "there 60 s after the task reported"
                            )
        if problems:
            _fail(f"{database.dialect}: a query the database does not stop", problems)


def _deadline_problem(outcome: Outcome, timeout_ms: int) -> str | None:
    limit = timeout_ms / 1000
    over = outcome.elapsed - limit
    allowed = promise(timeout_ms) - limit
    if not outcome.finished:
        return f"no deadline: the query was still running {over:.1f} s past timeout_ms={timeout_ms}; the kit stopped waiting"
    if outcome.error is None and outcome.crash is None:
        return f"no deadline: the query ran {over:.1f} s past timeout_ms={timeout_ms} and returned its rows instead of a time-limit error"
    if not isinstance(outcome.error, QueryTimeoutError) or not outcome.error.retryable:
        return f"a query past its time limit must end in a retryable QueryTimeoutError, got {outcome.describe()}"
    if outcome.elapsed > promise(timeout_ms):
        return f"no deadline: the query ran {over:.1f} s past timeout_ms={timeout_ms} (at most {allowed:.1f} s are allowed)"
    return None


def _wait_until_gone(still_running: Any, raw: Any, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while True:
        left = still_running(raw)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def _junk_tasks(count: int = 150, seed: int = 20261204) -> list[dict[str, Any]]:
    """Task inputs of junk shaped like task inputs, the same every run."""
    rng = random.Random(seed)
    scalars: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        7,
        2**70,
        -(2**70),
        1.5,
        math.nan,
        math.inf,
        "",
        "x",
        "\x00",
        "'",
        "%s",
        "\u2028",
        "9" * 30,
    ]

    def value(depth: int = 0) -> Any:
        roll = rng.random()
        if depth < 2 and roll < 0.15:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        if depth < 2 and roll < 0.3:
            return {rng.choice(["v", "n", "x", "", "a b"]): value(depth + 1) for _ in range(rng.randint(0, 3))}
        return rng.choice(scalars)

    limits: list[Any] = [None, 0, -1, 1, 3, "1", "12", " 2 ", "abc", 1.5, True, [], {}, 2**70, "", 1000]
    tasks = []
    for _ in range(count):
        if rng.random() < 0.8:
            query = " ".join(rng.choice(SQL_PIECES) for _ in range(rng.randint(1, 12)))
        else:
            query = "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 40)))
        if not query.strip():
            query = "?"
        task: dict[str, Any] = {"query": query}
        if rng.random() < 0.5:
            task["parameters"] = rng.choice([{"n": value(), "v": value()}, [value() for _ in range(rng.randint(0, 3))], value()])
        for name in ("max_rows", "timeout_ms"):
            if rng.random() < 0.25:
                task[name] = rng.choice(limits)
        for name, choices in (
            ("shape", ["objects", "arrays", "rows", 1, None]),
            ("fetch", ["rows", "one", "value", "all", None]),
        ):
            if rng.random() < 0.2:
                task[name] = rng.choice(choices)
        tasks.append(task)
    return tasks
