"""`sqladapter execute` and `sqladapter ledger` as an operator types them, on a SQLite file."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from sqladapter.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def shop(data_dir, monkeypatch):
    path = data_dir / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(1, "placed"), (2, "placed")])
    conn.close()
    monkeypatch.setenv("SQLADAPTER_CONNECTION_SHOP", f"sqlite:///{path}")
    monkeypatch.setenv("SQLADAPTER_CONNECTION_SHOP_WRITABLE", "1")
    return path


def statuses(path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT status FROM orders ORDER BY id")]
    finally:
        conn.close()


def test_execute_with_a_parameter_and_an_expected_count(shop):
    result = run("execute", "@shop", "UPDATE orders SET status = :status WHERE id = :id", "-p", "status=paid",
                 "--params", '{"id": 1}', "--expected-rows", "1")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["rowsAffected"] == 1 and out["replayed"] is False and out["dialect"] == "sqlite"
    assert statuses(shop) == ["paid", "placed"]


def test_execute_with_a_wrong_count_rolls_back_and_exits_2(shop):
    result = run("execute", "@shop", "UPDATE orders SET status = 'x'", "--expected-rows", "0:1")
    assert result.exit_code == 2
    assert "unexpected_row_count" in result.output and "changed 2 row(s), expected 0 to 1" in result.output
    assert statuses(shop) == ["placed", "placed"]


def test_execute_several_statements_in_one_transaction(shop):
    result = run("execute", "@shop", "UPDATE orders SET status = 'a' WHERE id = 1", "DELETE FROM orders WHERE id = 2")
    assert json.loads(result.output)["rowsAffected"] == [1, 1]
    assert statuses(shop) == ["a"]


def test_execute_a_batch_of_parameter_sets(shop):
    sets = json.dumps([{"id": 10 + i, "status": "new"} for i in range(100)])
    result = run("execute", "@shop", "INSERT INTO orders (id, status) VALUES (:id, :status)", "--parameter-sets", sets)
    assert json.loads(result.output)["rowsAffected"] == 100
    assert len(statuses(shop)) == 102


def test_ledger_init_then_an_idempotency_key_replays_and_prune_forgets(shop):
    update = ("execute", "@shop", "UPDATE orders SET status = status || '!' WHERE id = 1", "--idempotency-key", "order-1")
    missing = run(*update)
    assert missing.exit_code == 2 and "sqladapter ledger init @shop" in missing.output
    assert "created" in run("ledger", "init", "@shop").output
    assert "already there" in run("ledger", "init", "@shop").output
    assert json.loads(run(*update).output)["replayed"] is False
    assert json.loads(run(*update).output)["replayed"] is True
    assert statuses(shop) == ["placed!", "placed"]
    assert "0 expired" in run("ledger", "prune", "@shop").output
    conn = sqlite3.connect(shop)
    with conn:
        conn.execute("UPDATE sqladapter_ledger SET created_at = created_at - 3600")
    conn.close()
    assert "1 expired" in run("ledger", "prune", "@shop", "--older-than", "60").output
    assert json.loads(run(*update).output)["replayed"] is False  # forgotten: it runs again
    assert statuses(shop) == ["placed!!", "placed"]


def test_execute_refuses_an_inline_connection_and_a_connection_not_marked(shop, monkeypatch):
    inline = run("execute", str(shop), "DELETE FROM orders")
    assert inline.exit_code == 2 and "not_writable" in inline.output
    monkeypatch.delenv("SQLADAPTER_CONNECTION_SHOP_WRITABLE")
    unmarked = run("execute", "@shop", "DELETE FROM orders")
    assert unmarked.exit_code == 2 and "SQLADAPTER_CONNECTION_SHOP_WRITABLE=1" in unmarked.output
    assert statuses(shop) == ["placed", "placed"]


def test_a_connections_file_marks_a_connection_writable_in_its_table_form(shop, tmp_path, monkeypatch):
    monkeypatch.delenv("SQLADAPTER_CONNECTION_SHOP")
    monkeypatch.delenv("SQLADAPTER_CONNECTION_SHOP_WRITABLE")
    config = tmp_path / "connections.toml"
    config.write_text(f'[connections]\nreader = "sqlite:///{shop}"\n\n[connections.shop]\nurl = "sqlite:///{shop}"\nwritable = true\n')
    monkeypatch.setenv("SQLADAPTER_CONNECTIONS_FILE", str(config))
    assert run("execute", "@shop", "DELETE FROM orders WHERE id = 2").exit_code == 0
    refused = run("execute", "@reader", "DELETE FROM orders")
    assert refused.exit_code == 2 and "writable = true" in refused.output
    # The plain string form still serves queries.
    assert json.loads(run("query", "@reader", "SELECT COUNT(*) FROM orders", "--fetch", "value").output)["value"] == 1
    assert statuses(shop) == ["placed"]
