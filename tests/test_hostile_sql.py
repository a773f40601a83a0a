"""Every statement in hostile_sql.json, on every dialect it names: refused, database unchanged.

Each statement runs through `run_query` as a task input would carry it. It must end in a
terminal error (a retryable time-limit error for sleeps and runaway work), leave every table,
sequence, lock, role and file as it was, leave the pooled session as it was (the probe query
answers the same before and after), and never echo the secret file's content.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from security_databases import DIALECTS, exclusive_use, make_outside, make_target, plugin_installed, remove_tree, report
from servers import REQUIRE_SERVERS, server_unavailable

from sqladapter import QueryTimeoutError, SqlAdapterError
from sqladapter.statements import check_statement

CORPUS = json.loads((Path(__file__).parent / "hostile_sql.json").read_text())
# Short enough to keep the run quick, long enough that a refused statement never hits it.
TIMEOUT_MS = 1500

_tally: dict[str, Counter] = defaultdict(Counter)


def _cases():
    for dialect in DIALECTS:
        for index, entry in enumerate(CORPUS):
            if dialect in entry["dialects"]:
                yield pytest.param(dialect, entry, id=f"{dialect}-{index:03d}")


@pytest.fixture(scope="module")
def outside():
    made = make_outside()
    with exclusive_use():
        yield made
    remove_tree(made.root)


@pytest.fixture(scope="module")
def targets(tmp_path_factory, outside, request):
    """Each dialect's database, made on first use; a failure to make one is kept and re-raised."""
    data_dir = tmp_path_factory.mktemp("hostile-data")
    (data_dir / "escape.txt").symlink_to(outside.secret)
    made: dict = {}

    def get(dialect: str):
        if dialect not in made:
            if not plugin_installed(dialect):
                made[dialect] = f"the {dialect} plugin is not installed (pip install ./plugins/sqladapter-{dialect})"
            else:
                try:
                    made[dialect] = make_target(dialect, data_dir, outside)
                except Exception as exc:  # a server that does not answer
                    made[dialect] = f"{dialect} server unavailable: {type(exc).__name__}: {exc}"
        return made[dialect], data_dir

    yield get
    for target in made.values():
        if not isinstance(target, str):
            target.close()
    report(request.config, [
        f"hostile SQL on {dialect}: {sum(counts.values())} statements tried, "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        for dialect, counts in sorted(_tally.items())
    ])


def _render(sql: str, outside, data_dir: Path) -> str:
    for name, value in (
        ("{outside}", outside.out),
        ("{secret_csv}", outside.secret_csv),
        ("{secret_json}", outside.secret_json),
        ("{secret}", outside.secret),
        ("{escape_link}", data_dir / "escape.txt"),
        ("{data_dir}", data_dir),
    ):
        sql = sql.replace(name, str(value))
    return sql


def _layer(sql: str, target) -> str:
    """Which layer refused: the parser-based guard, or the database's own read-only session."""
    resolved = target.runtime.resolve(target.connection_string)
    try:
        check_statement(sql, resolved.dialect, target.runtime.pools.allowed_functions(resolved))
    except SqlAdapterError:
        return "guard"
    return "database"


def _probe(target) -> dict:
    return target.run(query=target.probe, timeout_ms=10_000)["rows"]


@pytest.mark.servers
@pytest.mark.parametrize("dialect, entry", list(_cases()))
def test_hostile_statement_is_refused_and_changes_nothing(targets, outside, dialect, entry):
    target, data_dir = targets(dialect)
    if isinstance(target, str):
        if dialect in ("mysql", "postgresql") or REQUIRE_SERVERS:
            server_unavailable(target)
        pytest.skip(target)
    sql = _render(entry["sql"], outside, data_dir)
    before, probe_before = target.snapshot(), _probe(target)

    try:
        output = target.run(query=sql, timeout_ms=TIMEOUT_MS)
    except SqlAdapterError as exc:
        error = exc
    else:
        _tally[dialect]["got through"] += 1
        pytest.fail(f"{entry['why']}: {sql!r} ran on {dialect} and returned {json.dumps(output)[:300]}")

    if entry["expect"] == "timeout":
        assert isinstance(error, QueryTimeoutError) and error.retryable, (
            f"{entry['why']}: expected a retryable time-limit error, got {type(error).__name__}: {error.message}"
        )
        _tally[dialect]["stopped by the time limit"] += 1
    else:
        assert not error.retryable, f"{entry['why']}: expected a terminal error, got {type(error).__name__}: {error.message}"
        _tally[dialect][f"refused by the {_layer(sql, target)}"] += 1
    assert outside.marker not in error.message
    assert error.message.strip()

    assert _probe(target) == probe_before, f"{entry['why']}: the pooled session changed"
    assert target.snapshot() == before, f"{entry['why']}: the database or the files outside changed"
