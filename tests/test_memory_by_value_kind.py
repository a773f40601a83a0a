"""Peak memory of one task by value kind: every value's real size counts toward the output budget.

Each case runs one `run_query` in a fresh interpreter (tests/memory_task.py) asking for
max_rows 10,000 of 300 rows, each holding about 200 KB of one kind of value that the query
builds itself: text, bytes, long numerics, arrays, structs, JSON. It records how far the
process's resident memory peaks above a baseline taken after a small query of the same kind
(imports, engine, connection and converters are in the baseline), and checks that the task
comes back `truncated: true` with the few rows the budget holds.

The bound, with B = SQLADAPTER_MAX_OUTPUT_BYTES (1 MB here):

    peak RSS growth < 8 x B + 64 MB            (72 MB)

for rows up to B / 5 wide, on SQLite, MariaDB and PostgreSQL, for every kind. The fetch reads
16 rows before it knows how wide they are (3.2 MB of 200 KB rows) and stops there; those rows,
their JSON conversion and the output take a few times that, and PostgreSQL's 64-row network
chunk (12.8 MB) fits in the constant. Measured: 7 to 16 MB on SQLite and MariaDB, 18 to 35 MB
on PostgreSQL, the same with B = 3 MB.

Three kinds of case cannot meet it, and state their own bounds and reasons:

- DuckDB computes 2,048 rows at a time, so all 300 rows (60 MB) are one vector held in the
  worker before the first row is read, and a function building the values (json_object, a
  list, a struct) holds its input vector as well: + 3 x min(rows, 2048) x row width. The
  term grows with the rows of one vector, not with B. Measured: 43 to 188 MB (json_object).
- A JSON document of many small members, parsed (PostgreSQL jsonb, DuckDB JSON), takes about
  19 times its JSON text in Python objects (a dict and an int for each `{"k":12345}`), once as
  the driver parses it and once more as it is converted, for the 16 rows read before the
  budget trims them: + 2 x 25 x 16 x row width. Measured: about 130 MB on both.
- Rows wider than B (2 MB, SQLite's cap on a value): the 16 rows read first are 32 MB whatever
  B is, so the growth follows the row width and not B: 4 x 16 x row width + 64 MB, and on
  PostgreSQL also the 64-row network chunk libpq holds, where bytea travels as hex text:
  + 64 x 2 x row width. Measured: 117 MB on SQLite and MariaDB, 300 MB on PostgreSQL.

Kinds a dialect lacks are not run: SQLite has no decimal, array or struct type; MariaDB has
no array or struct type and its widest DECIMAL has 65 digits, DuckDB's 38 (so its decimal case
is a list of DECIMAL(38,10)). MariaDB's JSON functions return text, as does SQLite's.

The measured figures are printed under the test progress.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from servers import server_unavailable

from sqladapter.runtime import default
from sqladapter.testing import report

BUDGET = 1_000_000  # SQLADAPTER_MAX_OUTPUT_BYTES, the default
MB = 1_000_000
ROWS, WIDTH = 300, 200_000
MAX_ROWS = 10_000
# The rows the fetch reads before it has measured any (Dialect.fetch_rows's first chunk), the
# rows DuckDB computes at once, and the rows libpq holds per network chunk (the PostgreSQL plugin).
FIRST_CHUNK, DUCKDB_VECTOR, LIBPQ_CHUNK = 16, 2048, 64
COMMON_BOUND = 8 * BUDGET + 64 * MB

TASK = Path(__file__).with_name("memory_task.py")
Query = Callable[[int, int], str]  # (rows, bytes per row) -> SQL


@dataclass(frozen=True)
class Case:
    dialect: str
    kind: str
    query: Query
    rows: int = ROWS
    width: int = WIDTH
    duckdb_vector: bool = False  # the vector DuckDB computes is held whole
    parsed_members: bool = False  # a parsed JSON document of many small members
    wide: bool = False  # rows wider than the budget

    @property
    def bound(self) -> int:
        """Bytes of peak RSS growth allowed, by the module docstring's terms."""
        if self.wide:
            bound = 4 * FIRST_CHUNK * self.width + 64 * MB
            if self.dialect == "postgresql":
                bound += LIBPQ_CHUNK * 2 * self.width  # bytea travels as hex text
            return bound
        bound = COMMON_BOUND
        if self.duckdb_vector:
            bound += 3 * min(self.rows, DUCKDB_VECTOR) * self.width
        if self.parsed_members:
            bound += 2 * 25 * FIRST_CHUNK * self.width
        return bound

    @property
    def id(self) -> str:
        return f"{self.dialect}-{self.kind.replace(' ', '_')}"


def _recursive_rows(n: int) -> str:
    return f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {n}) "


def _members(width: int) -> int:
    # {"k":12345}, and a comma: 12 bytes of JSON per member.
    return width // 12


CASES = [
    # SQLite: rows from a recursive CTE; printf('%.*c') and zeroblob make the values.
    Case("sqlite", "text", lambda n, w: _recursive_rows(n) + f"SELECT i, printf('%.*c', {w}, 'x') AS v FROM r"),
    Case("sqlite", "bytes", lambda n, w: _recursive_rows(n) + f"SELECT i, zeroblob({w}) AS v FROM r"),
    Case(
        "sqlite",
        "json",
        lambda n, w: _recursive_rows(n) + f"SELECT i, json_object('i', i, 'v', printf('%.*c', {w}, 'x')) AS v FROM r",
    ),
    Case(
        "sqlite",
        "json many members",
        lambda n, w: f"WITH RECURSIVE e(j) AS (SELECT 10000 UNION ALL SELECT j + 1 FROM e WHERE j < {10000 + _members(w)}), "
        "d(doc) AS (SELECT json_group_array(json_object('k', j)) FROM e), "
        f"r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {n}) SELECT i, d.doc AS v FROM r, d",
    ),
    # DuckDB: rows from range().
    Case("duckdb", "text", lambda n, w: f"SELECT i, repeat('x', {w}) AS v FROM range({n}) t(i)", duckdb_vector=True),
    Case("duckdb", "bytes", lambda n, w: f"SELECT i, repeat('x', {w})::BLOB AS v FROM range({n}) t(i)", duckdb_vector=True),
    Case(
        "duckdb",
        "decimal",
        # 40 bytes of JSON per element: 28 integer and 10 fraction digits, a point and a comma.
        lambda n, w: f"SELECT i, list_transform(range(0, {w // 40}), "
        "x -> CAST('1000000000000000000000000000' AS DECIMAL(38,10)) + x) AS v "
        f"FROM range({n}) t(i)",
        duckdb_vector=True,
    ),
    Case(
        "duckdb",
        "array",
        # 7 bytes of JSON per element: six digits and a comma.
        lambda n, w: f"SELECT i, range(100000, {100000 + w // 7}) AS v FROM range({n}) t(i)",
        duckdb_vector=True,
    ),
    Case(
        "duckdb",
        "struct",
        lambda n, w: f"SELECT i, {{'i': i, 'v': repeat('x', {w})}} AS v FROM range({n}) t(i)",
        duckdb_vector=True,
    ),
    Case(
        "duckdb",
        "json",
        lambda n, w: f"SELECT i, json_object('i', i, 'v', repeat('x', {w})) AS v FROM range({n}) t(i)",
        duckdb_vector=True,
    ),
    Case(
        "duckdb",
        "json many members",
        lambda n, w: f"SELECT i, to_json(list_transform(range(10000, {10000 + _members(w)}), x -> {{'k': x}})) AS v "
        f"FROM range({n}) t(i)",
        duckdb_vector=True,
        parsed_members=True,
    ),
    # MariaDB/MySQL: rows from a recursive CTE.
    Case("mysql", "text", lambda n, w: _recursive_rows(n) + f"SELECT i, REPEAT('x', {w}) AS v FROM r"),
    Case("mysql", "bytes", lambda n, w: _recursive_rows(n) + f"SELECT i, CAST(REPEAT('x', {w}) AS BINARY) AS v FROM r"),
    Case("mysql", "json", lambda n, w: _recursive_rows(n) + f"SELECT i, JSON_OBJECT('i', i, 'v', REPEAT('x', {w})) AS v FROM r"),
    Case(
        "mysql",
        "json many members",
        # Members from a cross join of two short recursions: a server may cap a recursive CTE
        # at 1,000 iterations (max_recursive_iterations), and MariaDB then ends it silently.
        lambda n, w: "WITH RECURSIVE t(d) AS (SELECT 0 UNION ALL SELECT d + 1 FROM t WHERE d < 999), "
        f"d AS (SELECT JSON_ARRAYAGG(JSON_OBJECT('k', 10000 + a.d + 1000 * b.d)) AS doc FROM t a, t b "
        f"WHERE b.d <= {_members(w) // 1000} AND a.d + 1000 * b.d < {_members(w)}), "
        f"r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {n}) SELECT i, d.doc AS v FROM r, d",
    ),
    # PostgreSQL: rows from generate_series.
    Case("postgresql", "text", lambda n, w: f"SELECT i, repeat('x', {w}) AS v FROM generate_series(1, {n}) AS i"),
    Case(
        "postgresql",
        "bytes",
        lambda n, w: f"SELECT i, convert_to(repeat('x', {w}), 'UTF8') AS v FROM generate_series(1, {n}) AS i",
    ),
    Case(
        "postgresql",
        "decimal",
        # Two numerics of 100,000 digits each (numeric takes up to 131,072 before the point).
        lambda n, w: f"SELECT i, repeat('9', {w // 2})::numeric AS a, repeat('8', {w // 2})::numeric AS b "
        f"FROM generate_series(1, {n}) AS i",
    ),
    Case(
        "postgresql",
        "array",
        lambda n, w: f"SELECT i, array_fill(100000 + i, ARRAY[{w // 7}]) AS v FROM generate_series(1, {n}) AS i",
    ),
    Case(
        "postgresql",
        "json",
        lambda n, w: f"SELECT i, jsonb_build_object('i', i, 'v', repeat('x', {w})) AS v FROM generate_series(1, {n}) AS i",
    ),
    Case(
        "postgresql",
        "json many members",
        lambda n, w: f"WITH d AS (SELECT jsonb_agg(jsonb_build_object('k', j)) AS doc "
        f"FROM generate_series(10000, {10000 + _members(w)}) AS j) "
        f"SELECT i, d.doc AS v FROM generate_series(1, {n}) AS i, d",
        parsed_members=True,
    ),
]

# Rows of 2 MB (just under SQLite's cap on a value), twice the budget: no row fits, and the
# fetch still reads its first 16 before it stops.
WIDE = 1_990_000
WIDE_CASES = [
    Case(case.dialect, "bytes 2 MB rows", case.query, rows=100, width=WIDE, wide=True)
    for case in CASES
    if case.kind == "bytes" and case.dialect in ("sqlite", "mysql", "postgresql")
]

_measured: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def _table(request):
    """Print the measured peak RSS growth, dialect by kind, once every case has run."""
    yield
    if not _measured:
        return
    dialects = ("sqlite", "duckdb", "mysql", "postgresql")
    kinds = list(dict.fromkeys(case.kind for case in CASES + WIDE_CASES))
    lines = [
        f"peak RSS growth of one task, MB (300 rows x 200 KB asked, max_rows {MAX_ROWS}, budget {BUDGET // MB} MB; "
        f"bound {COMMON_BOUND // MB} MB but where stated):",
        f"  {'kind':<18}" + "".join(f"{d:>12}" for d in dialects),
    ]
    for kind in kinds:
        cells = []
        for dialect in dialects:
            growth = _measured.get((dialect, kind))
            case = next((c for c in CASES + WIDE_CASES if c.dialect == dialect and c.kind == kind), None)
            if growth is not None:
                cells.append(f"{growth:.1f}" + ("" if case.bound == COMMON_BOUND else f"/{case.bound / MB:.0f}"))
            else:
                cells.append("-" if case is None else "not run")
        lines.append(f"  {kind:<18}" + "".join(f"{cell:>12}" for cell in cells))
    lines.append("  (a/b: measured a MB against the case's own bound b MB; - : the dialect has no such kind)")
    report(request.config, lines)


def _connection_string(request, case: Case, data_dir: Path) -> str:
    if case.dialect == "sqlite":
        sqlite3.connect(data_dir / "memory.db").close()
        return "memory.db"
    if case.dialect == "duckdb":
        duckdb = pytest.importorskip("duckdb")
        duckdb.connect(str(data_dir / "memory.duckdb")).close()
        return "memory.duckdb"
    try:
        default().registry.for_backend(case.dialect)
    except Exception as exc:
        server_unavailable(f"the {case.dialect} dialect is not installed: {exc}")
    return request.getfixturevalue("mysql_url" if case.dialect == "mysql" else "postgresql_url")


def _measure(case: Case, connection_string: str, data_dir: Path) -> dict:
    """Run the case in a fresh interpreter; return what memory_task.py printed."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("peak RSS is read from /proc/self (Linux)")
    request = {
        "connection_string": connection_string,
        "warm": case.query(2, 100),
        "query": case.query(case.rows, case.width),
        "max_rows": MAX_ROWS,
    }
    env = {
        **os.environ,
        "SQLADAPTER_DATA_DIR": str(data_dir),
        "SQLADAPTER_MAX_OUTPUT_BYTES": str(BUDGET),
        "SQLADAPTER_MAX_ROWS": str(MAX_ROWS),
    }
    done = subprocess.run(
        [sys.executable, str(TASK)], input=json.dumps(request), capture_output=True, text=True, env=env, timeout=120
    )
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        if case.dialect in ("mysql", "postgresql") and "DatabaseUnavailableError" in done.stderr:
            server_unavailable(f"{case.dialect}: {message}")
        pytest.fail(f"{case.id}: the task failed in its process: {message}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _check(request, case: Case, data_dir: Path) -> None:
    connection_string = _connection_string(request, case, data_dir)
    result = _measure(case, connection_string, data_dir)
    growth = result["growth_kb"] * 1024
    _measured[(case.dialect, case.kind)] = growth / MB
    assert result["truncated"] is True, result
    assert result["outputBytes"] <= BUDGET, result
    # At most what the budget holds of 200 KB rows (a few more where a row's JSON is shorter).
    assert result["rowCount"] <= (0 if case.wide else BUDGET // (case.width * 3 // 4)), result
    assert growth < case.bound, (
        f"{case.id}: peak RSS rose {growth / MB:.1f} MB above the warmed-up baseline "
        f"({result['baseline_kb'] // 1024} MB), over the bound of {case.bound / MB:.0f} MB"
    )


def _params(cases: list[Case]) -> list:
    return [
        pytest.param(case, id=case.id, marks=[pytest.mark.servers] if case.dialect in ("mysql", "postgresql") else [])
        for case in cases
    ]


@pytest.mark.parametrize("case", _params(CASES))
def test_one_task_of_wide_values_stays_within_its_memory_bound(case, request, data_dir):
    _check(request, case, data_dir)


@pytest.mark.parametrize("case", _params(WIDE_CASES))
def test_rows_wider_than_the_budget_cost_the_first_chunk_of_rows(case, request, data_dir):
    """The stated exception: the first 16 rows are read whatever their width."""
    _check(request, case, data_dir)
