"""execute_sql on all four dialects: refusals, expected_rows, batches, transactions, the ledger.

Every effect is re-read through the raw driver (write_targets.Target.rows), on SQLite and
DuckDB files and on the real MariaDB and PostgreSQL servers.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from write_targets import DIALECTS, NAME, drop, make_target

from sqladapter import ledger
from sqladapter.errors import (
    ConnectionConfigError,
    ConstraintViolationError,
    InputError,
    NotDmlError,
    NotReadOnlyError,
    NotWritableError,
    RowCountError,
    SqlAdapterError,
)

SERVERS = ("mysql", "postgresql")


def _marks(dialect: str) -> list:
    return [pytest.mark.servers] if dialect in SERVERS else []


PARAMS = [pytest.param(d, marks=_marks(d), id=d) for d in DIALECTS]


@pytest.fixture(params=PARAMS)
def target(request, tmp_path):
    made = make_target(request.param, tmp_path)
    yield made
    drop(made)


def key() -> str:
    return f"test-{uuid.uuid4()}"


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", PARAMS)
def test_a_connection_not_marked_writable_is_refused_and_says_how_to_mark_it(dialect, tmp_path):
    target = make_target(dialect, tmp_path, writable=False)
    try:
        with pytest.raises(NotWritableError) as raised:
            target.execute(statement=f"UPDATE {target.table} SET qty = 0")
        assert "SQLADAPTER_CONNECTION_SHOP_WRITABLE=1" in raised.value.message
        assert not raised.value.retryable
        assert [qty for _, _, qty in target.rows()] == [10, 10, 10]
    finally:
        drop(target)


def test_an_inline_connection_string_or_path_is_refused(target):
    for inline in (target.url, "shop.db"):
        with pytest.raises(NotWritableError) as raised:
            target.runtime.execute({"connection_string": inline, "statement": f"UPDATE {target.table} SET qty = 0"})
        assert "named connection" in raised.value.message
    assert [qty for _, _, qty in target.rows()] == [10, 10, 10]


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE {t}",
        "CREATE TABLE {t}_copy (id INTEGER)",
        "ALTER TABLE {t} ADD COLUMN extra INTEGER",
        "TRUNCATE TABLE {t}",
        "SELECT * FROM {t}",
        "UPDATE {t} SET qty = 0; DROP TABLE {t}",
        "WITH gone AS (DELETE FROM {t} RETURNING id) SELECT * FROM gone",
        "GRANT SELECT ON {t} TO PUBLIC",
    ],
)
def test_ddl_and_anything_but_one_dml_statement_is_refused(target, statement):
    with pytest.raises((NotDmlError, NotReadOnlyError, InputError, SqlAdapterError)) as raised:
        target.execute(statement=statement.format(t=target.table))
    assert not raised.value.retryable
    assert [qty for _, _, qty in target.rows()] == [10, 10, 10]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM {t}",
        "UPDATE {t} SET qty = 0",
        "INSERT INTO {t} (id, status, qty) VALUES (9, 'x', 1)",
        "WITH x AS (SELECT 1 AS one) DELETE FROM {t}",
        "SELECT * FROM {t} FOR UPDATE",
    ],
)
def test_query_sql_still_refuses_every_write_on_a_writable_connection(target, statement):
    with pytest.raises(SqlAdapterError) as raised:
        target.runtime.run({"connection": NAME, "query": statement.format(t=target.table)})
    assert not raised.value.retryable
    assert [qty for _, _, qty in target.rows()] == [10, 10, 10]


def test_a_function_off_the_allowlist_is_refused_in_a_write(target):
    calls = {"sqlite": "load_extension('x')", "duckdb": "getenv('HOME')", "mysql": "load_file('/etc/passwd')",
             "postgresql": "pg_read_file('/etc/passwd')"}
    with pytest.raises(NotDmlError):
        target.execute(statement=f"UPDATE {target.table} SET status = {calls[target.dialect]}")
    assert [status for _, status, _ in target.rows()] == ["placed"] * 3


# -- expected_rows ------------------------------------------------------------------------


def test_expected_rows_exact_passes_and_commits(target):
    out = target.execute(
        statement=f"UPDATE {target.table} SET status = :status WHERE id = :id", parameters={"status": "paid", "id": 2},
        expected_rows=1,
    )
    assert out["rowsAffected"] == 1 and out["replayed"] is False and out["dialect"] == target.dialect
    assert target.rows() == [(1, "placed", 10), (2, "paid", 10), (3, "placed", 10)]


def test_expected_rows_mismatch_rolls_back_and_names_both_counts(target):
    with pytest.raises(RowCountError) as raised:
        target.execute(statement=f"UPDATE {target.table} SET status = 'paid' WHERE id >= 2", expected_rows=1)
    assert "changed 2 row(s), expected exactly 1" in raised.value.message
    assert not raised.value.retryable
    assert [status for _, status, _ in target.rows()] == ["placed"] * 3


def test_expected_rows_zero_can_be_asserted(target):
    out = target.execute(statement=f"DELETE FROM {target.table} WHERE id = 99", expected_rows=0)
    assert out["rowsAffected"] == 0
    with pytest.raises(RowCountError) as raised:
        target.execute(statement=f"DELETE FROM {target.table} WHERE id = 1", expected_rows=0)
    assert "changed 1 row(s), expected exactly 0" in raised.value.message
    assert len(target.rows()) == 3


def test_expected_rows_range(target):
    with pytest.raises(RowCountError) as raised:
        target.execute(statement=f"UPDATE {target.table} SET qty = qty - 1", expected_rows={"min": 1, "max": 2})
    assert "changed 3 row(s), expected 1 to 2" in raised.value.message
    assert [qty for _, _, qty in target.rows()] == [10, 10, 10]
    out = target.execute(statement=f"UPDATE {target.table} SET qty = qty - 1", expected_rows={"min": 1, "max": 3})
    assert out["rowsAffected"] == 3
    assert [qty for _, _, qty in target.rows()] == [9, 9, 9]


def test_a_list_of_statements_is_all_or_nothing(target):
    t = target.table
    with pytest.raises(ConstraintViolationError) as raised:
        target.execute(statements=[
            {"statement": f"UPDATE {t} SET status = 'shipped' WHERE id = :id", "parameters": {"id": 1}},
            {"statement": f"INSERT INTO {t} (id, status, qty) VALUES (:id, 'new', 1)", "parameters": {"id": 2}},
        ])
    assert not raised.value.retryable
    assert target.rows() == [(1, "placed", 10), (2, "placed", 10), (3, "placed", 10)]
    out = target.execute(statements=[
        {"statement": f"UPDATE {t} SET status = 'shipped' WHERE id = :id", "parameters": {"id": 1}, "expected_rows": 1},
        f"DELETE FROM {t} WHERE id = 3",
    ])
    assert out["rowsAffected"] == [1, 1]
    assert target.rows() == [(1, "shipped", 10), (2, "placed", 10)]


def test_a_constraint_violation_is_terminal_and_names_the_constraint(target):
    t = target.table
    with pytest.raises(ConstraintViolationError) as raised:
        target.execute(statement=f"UPDATE {t} SET qty = -1 WHERE id = 1")
    assert not raised.value.retryable
    if target.dialect in ("postgresql", "mysql"):
        assert f"{t}_qty_positive" in raised.value.message
    with pytest.raises(ConstraintViolationError) as raised:
        target.execute(statement=f"INSERT INTO {t} (id, status, qty) VALUES (1, 'x', 1)")
    named = {"postgresql": f"{t}_pkey", "mysql": "PRIMARY", "sqlite": f"{t}.id", "duckdb": "primary key"}[target.dialect]
    assert named in raised.value.message
    assert target.rows() == [(1, "placed", 10), (2, "placed", 10), (3, "placed", 10)]


def test_upsert(target):
    t = target.table
    upsert = {
        "mysql": f"INSERT INTO {t} (id, status, qty) VALUES (:id, :status, :qty) ON DUPLICATE KEY UPDATE qty = qty + VALUES(qty)",
    }.get(
        target.dialect,
        f"INSERT INTO {t} (id, status, qty) VALUES (:id, :status, :qty) ON CONFLICT (id) DO UPDATE SET qty = {t}.qty + excluded.qty",
    )
    target.execute(statement=upsert, parameters={"id": 1, "status": "x", "qty": 5})
    target.execute(statement=upsert, parameters={"id": 7, "status": "new", "qty": 5})
    assert target.rows() == [(1, "placed", 15), (2, "placed", 10), (3, "placed", 10), (7, "new", 5)]


def test_returning_rows_come_back_as_query_rows(target):
    if target.dialect != "mysql":  # MariaDB returns rows from INSERT and DELETE only
        out = target.execute(
            statement=f"UPDATE {target.table} SET qty = qty + :n WHERE id <= :id RETURNING id, qty",
            parameters={"n": 1, "id": 2}, expected_rows=2,
        )
        assert out["rowsAffected"] == 2
        assert [c["name"] for c in out["columns"]] == ["id", "qty"]
        assert sorted((r["id"], r["qty"]) for r in out["rows"]) == [(1, 11), (2, 11)]
    out = target.execute(statement=f"INSERT INTO {target.table} (id, status, qty) VALUES (:id, 'new', 1) RETURNING id, status",
                         parameters={"id": 4})
    assert out["rows"] == [{"id": 4, "status": "new"}] and out["rowsAffected"] == 1
    out = target.execute(statement=f"DELETE FROM {target.table} RETURNING id", max_rows=1)
    assert out["rowsAffected"] == 4 and out["rowCount"] == 1 and out["truncated"] is True
    assert target.rows() == []


# -- parameter_sets -------------------------------------------------------------------------


def test_a_batch_of_10000_rows_through_parameter_sets(target):
    sets = [{"id": 1000 + i, "status": "batch", "qty": i % 7} for i in range(10_000)]
    out = target.execute(
        statement=f"INSERT INTO {target.table} (id, status, qty) VALUES (:id, :status, :qty)", parameter_sets=sets,
        expected_rows=10_000, timeout_ms=120_000,
    )
    assert out["rowsAffected"] == 10_000
    assert target.sql(f"SELECT COUNT(*), SUM(qty) FROM {target.table} WHERE status = 'batch'") == [
        (10_000, sum(i % 7 for i in range(10_000)))
    ]


def test_a_batch_with_a_bad_row_is_rolled_back_whole(target):
    sets = [[100 + i, "batch", 1] for i in range(50)] + [[1, "dup", 1]]
    with pytest.raises(ConstraintViolationError):
        target.execute(statement=f"INSERT INTO {target.table} (id, status, qty) VALUES (?, ?, ?)", parameter_sets=sets)
    assert len(target.rows()) == 3


def test_a_batch_checks_every_parameter_set_before_running(target):
    with pytest.raises(InputError) as raised:
        target.execute(
            statement=f"UPDATE {target.table} SET qty = :qty WHERE id = :id", parameter_sets=[{"id": 1, "qty": 1}, {"id": 2}]
        )
    assert "parameter_sets[1]" in raised.value.message
    with pytest.raises(InputError) as raised:
        target.execute(
            statement=f"UPDATE {target.table} SET qty = ? WHERE id = ?", parameter_sets=[[1, 1], [2, 2], [{"x": 1}, 3]]
        )
    assert "parameter_sets[2]" in raised.value.message and "JSON scalars" in raised.value.message
    assert [qty for _, _, qty in target.rows()] == [10, 10, 10]


# -- the ledger -----------------------------------------------------------------------------


def test_the_same_key_replays_the_stored_result_without_running_again(target):
    k = key()
    update = {"statement": f"UPDATE {target.table} SET qty = qty + 1 WHERE id = :id", "parameters": {"id": 1}, "idempotency_key": k}
    first = target.execute(**update)
    second = target.execute(**update)
    assert first["replayed"] is False and second["replayed"] is True
    assert second["rowsAffected"] == first["rowsAffected"] == 1
    assert target.rows()[0] == (1, "placed", 11)  # once
    assert target.sql(f"SELECT COUNT(*) FROM {ledger.TABLE} WHERE idempotency_key = %s", (k,)) == [(1,)]


def test_a_failed_write_records_nothing_so_its_retry_runs(target):
    k = key()
    with pytest.raises(RowCountError):
        target.execute(statement=f"DELETE FROM {target.table} WHERE id = 1", expected_rows=0, idempotency_key=k)
    assert target.sql(f"SELECT COUNT(*) FROM {ledger.TABLE} WHERE idempotency_key = %s", (k,)) == [(0,)]
    out = target.execute(statement=f"DELETE FROM {target.table} WHERE id = 1", expected_rows=1, idempotency_key=k)
    assert out["replayed"] is False and len(target.rows()) == 2


def test_a_key_reused_for_another_write_is_refused(target):
    k = key()
    target.execute(statement=f"UPDATE {target.table} SET qty = 1 WHERE id = 1", idempotency_key=k)
    with pytest.raises(InputError) as raised:
        target.execute(statement=f"UPDATE {target.table} SET qty = 2 WHERE id = 1", idempotency_key=k)
    assert "already used for a different write" in raised.value.message
    assert target.rows()[0] == (1, "placed", 1)


def test_a_missing_ledger_says_how_to_create_it(target):
    target.sql(f"DROP TABLE {ledger.TABLE}")
    try:
        with pytest.raises(ConnectionConfigError) as raised:
            target.execute(statement=f"UPDATE {target.table} SET qty = 0", idempotency_key=key())
        assert "sqladapter ledger init @shop" in raised.value.message
        assert [qty for _, _, qty in target.rows()] == [10, 10, 10]
    finally:
        ledger.init(target.runtime, NAME)


def test_prune_deletes_only_expired_records(target):
    old, new = key(), key()
    target.execute(statement=f"UPDATE {target.table} SET qty = 1 WHERE id = 1", idempotency_key=old)
    target.execute(statement=f"UPDATE {target.table} SET qty = 2 WHERE id = 2", idempotency_key=new)
    target.sql(f"UPDATE {ledger.TABLE} SET created_at = created_at - 1000 WHERE idempotency_key = %s", (old,))
    assert ledger.prune(target.runtime, NAME, older_than_seconds=500) >= 1
    keys = {row[0] for row in target.sql(f"SELECT idempotency_key FROM {ledger.TABLE}")}
    assert old not in keys and new in keys
    # Pruned, the old key runs again: the ledger forgets by design, after its time.
    assert target.execute(statement=f"UPDATE {target.table} SET qty = 1 WHERE id = 1", idempotency_key=old)["replayed"] is False


def test_ledger_init_twice_is_harmless(target):
    assert ledger.init(target.runtime, NAME) is False


@pytest.mark.parametrize("statement", [
    "DELETE FROM sqladapter_ledger",
    "INSERT INTO sqladapter_ledger (idempotency_key, request, result, created_at) VALUES ('k', 'r', '{{}}', 0)",
    "UPDATE {t} SET status = 'x' WHERE id IN (SELECT 1 FROM SQLADAPTER_LEDGER)",
])
def test_a_statement_may_not_touch_the_ledger(target, statement):
    k = key()
    target.execute(statement=f"UPDATE {target.table} SET qty = 1 WHERE id = 1", idempotency_key=k)
    with pytest.raises(NotDmlError) as raised:
        target.execute(statement=statement.format(t=target.table))
    assert "idempotency ledger" in raised.value.message
    assert target.sql(f"SELECT COUNT(*) FROM {ledger.TABLE} WHERE idempotency_key = %s", (k,)) == [(1,)]


def test_a_long_key_is_stored_as_its_digest(target):
    long_key = "wf-" + "x" * 500
    target.execute(statement=f"UPDATE {target.table} SET qty = 3 WHERE id = 3", idempotency_key=long_key)
    again = target.execute(statement=f"UPDATE {target.table} SET qty = 3 WHERE id = 3", idempotency_key=long_key)
    assert again["replayed"] is True


# -- concurrency ----------------------------------------------------------------------------


def test_eight_threads_on_the_same_rows_end_with_the_right_totals(target):
    """Each thread moves stock between rows 1 and 2 in opposite orders (deadlocks on the
    servers) and adds to row 3; retryable errors are retried, as the engine would."""
    t = target.table
    target.sql(f"UPDATE {t} SET qty = 1000 WHERE id <= 2")
    rounds, threads = 2, 8
    failures: list[BaseException] = []
    retried = [0]

    def work(n: int) -> None:
        first, second = (1, 2) if n % 2 else (2, 1)
        for r in range(rounds):
            k = f"{key()}-{n}-{r}"
            task = {
                "statements": [
                    {"statement": f"UPDATE {t} SET qty = qty - 1 WHERE id = :id", "parameters": {"id": first}},
                    {"statement": f"UPDATE {t} SET qty = qty + 1 WHERE id = :id", "parameters": {"id": second}},
                    f"UPDATE {t} SET qty = qty + 1 WHERE id = 3",
                ],
                "idempotency_key": k,
                "timeout_ms": 20_000,
            }
            for _attempt in range(200):
                try:
                    target.execute(**task)
                    break
                except SqlAdapterError as exc:
                    if not exc.retryable:
                        failures.append(exc)
                        return
                    retried[0] += 1
                    # The engine's retry delay, with jitter: PostgreSQL finds a deadlock only
                    # after deadlock_timeout (1 s), so transactions that retry in step meet again.
                    time.sleep(random.uniform(0, 0.05 * min(_attempt + 1, 10)))
            else:
                failures.append(AssertionError("never succeeded"))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures, failures[:3]
    rows = target.rows()
    assert rows[0][2] + rows[1][2] == 2000  # moved, never lost or doubled
    assert rows[0][2] == rows[1][2] == 1000  # as many moves each way
    assert rows[2][2] == 10 + rounds * threads
