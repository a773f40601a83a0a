"""Secrets: named connections with real passwords, run through the worker with every kind of
failure, then every task output, reason, task log line and worker log line searched for the
password and the full URL. Zero hits.

A MariaDB user and a PostgreSQL role with a password are made for this, with SELECT on the
`sqla_security` database only. The password holds the characters URLs escape (@ : / % #), so
both its raw and its URL-encoded forms are searched for. (The PostgreSQL server here trusts
127.0.0.1, so a wrong password still connects there; it is searched for all the same.)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import servers
from conductor_server import ConductorServer
from security_databases import (
    DATABASE,
    exclusive_use,
    mysql_admin,
    mysql_create_database,
    postgres_admin,
    postgres_create_database,
)
from servers import server_unavailable
from sqlalchemy.engine import make_url
from worker_process import WorkerProcess

from sqladapter import run_query
from sqladapter.errors import SqlAdapterError
from sqladapter.testing import report

USER = "sqla_security_user"
PORTS = {"mysql": servers.MYSQL_PORT, "postgresql": servers.POSTGRESQL_PORT}
ADDRESSES = {"mysql": servers.MYSQL_ADDRESS, "postgresql": servers.POSTGRESQL_ADDRESS}


def _password() -> str:
    return "Sq1a@" + secrets.token_hex(6) + ":p/w%d#"


def _url(dialect: str, password: str, *, port: int | None = None, database: str = DATABASE, query: str = "") -> str:
    quoted = urllib.parse.quote(password, safe="")
    return f"{dialect}://{USER}:{quoted}@{ADDRESSES[dialect]}:{port or PORTS[dialect]}/{database}{query}"


def _make_mysql_user(password: str) -> None:
    mysql_create_database()
    admin = mysql_admin()
    try:
        with admin.cursor() as cur:
            # (PyMySQL formats % only when it is given parameters.)
            cur.execute(f"DROP USER IF EXISTS '{USER}'@'%'")
            cur.execute(f"CREATE USER '{USER}'@'%%' IDENTIFIED BY %s", (password,))
            cur.execute(f"GRANT SELECT ON {DATABASE}.* TO '{USER}'@'%'")
            cur.execute("CREATE TABLE IF NOT EXISTS secrets_probe (id INT PRIMARY KEY, label VARCHAR(20))")
            cur.execute("REPLACE INTO secrets_probe VALUES (1, 'visible')")
    finally:
        admin.close()


def _make_postgres_role(password: str) -> None:
    from psycopg import sql

    postgres_create_database()
    admin = postgres_admin()
    try:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(USER), sql.Literal(password)))
        admin.execute("CREATE TABLE IF NOT EXISTS secrets_probe (id int PRIMARY KEY, label text)")
        admin.execute("INSERT INTO secrets_probe VALUES (1, 'visible') ON CONFLICT DO NOTHING")
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(DATABASE), sql.Identifier(USER)))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(USER)))
        admin.execute(sql.SQL("GRANT SELECT ON secrets_probe TO {}").format(sql.Identifier(USER)))
    finally:
        admin.close()


SLEEP = {"mysql": "SELECT SLEEP(5) AS s", "postgresql": "SELECT pg_sleep(5) AS s"}
BAD_OPTION = {"mysql": "?charset=no_such_charset", "postgresql": "?sslmode=no_such_mode"}


def _scenarios(dialect: str, password: str, wrong: str) -> tuple[dict[str, str], list[tuple[dict, set[str]]]]:
    """Named connections for the worker, and (task input, acceptable statuses) pairs."""
    name = dialect.upper()
    connections = {
        f"SQLADAPTER_CONNECTION_{name}_GOOD": _url(dialect, password),
        f"SQLADAPTER_CONNECTION_{name}_WRONG": _url(dialect, wrong),
        f"SQLADAPTER_CONNECTION_{name}_DOWN": _url(dialect, password, port=9),
        f"SQLADAPTER_CONNECTION_{name}_NODB": _url(dialect, password, database="sqla_security_missing"),
        f"SQLADAPTER_CONNECTION_{name}_BADOPT": _url(dialect, password, query=BAD_OPTION[dialect]),
    }
    good, terminal, retryable = {"COMPLETED"}, {"FAILED_WITH_TERMINAL_ERROR"}, {"FAILED"}
    wrong_outcome = terminal if dialect == "mysql" else good | terminal
    c = f"{dialect}_"
    tasks = [
        ({"connection": c + "good", "query": "SELECT id, label FROM secrets_probe"}, good),
        ({"connection": c + "good", "query": "SELEC id FROM secrets_probe"}, terminal),
        ({"connection": c + "good", "query": "SELECT * FROM no_such_table"}, terminal),
        ({"connection": c + "good", "query": "DELETE FROM secrets_probe"}, terminal),
        ({"connection": c + "good", "query": SLEEP[dialect], "timeout_ms": 300}, retryable),
        ({"connection": c + "good", "query": "SELECT :a AS a", "parameters": {"b": 1}}, terminal),
        ({"connection": c + "wrong", "query": "SELECT 1 AS one"}, wrong_outcome),
        ({"connection": c + "down", "query": "SELECT 1 AS one"}, retryable),
        ({"connection": c + "nodb", "query": "SELECT 1 AS one"}, terminal),
        ({"connection": c + "badopt", "query": "SELECT 1 AS one"}, terminal),
        # A password typed into the task itself is refused, and not echoed back.
        ({"connection_string": _url(dialect, password), "query": "SELECT 1 AS one"}, terminal),
    ]
    return connections, tasks


def _needles(dialect: str, password: str, wrong: str, urls: list[str]) -> set[str]:
    found = {password, wrong, urllib.parse.quote(password, safe=""), urllib.parse.quote(wrong, safe="")}
    for url in urls:
        found.add(url)
        found.add(make_url(url).render_as_string(hide_password=False))
    return found


@pytest.mark.servers
@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_no_password_or_url_in_any_output_reason_or_log_line(dialect, tmp_path: Path, request):
    password, wrong = _password(), _password()
    with exclusive_use():
        try:
            (_make_mysql_user if dialect == "mysql" else _make_postgres_role)(password)
        except Exception as exc:
            server_unavailable(f"{dialect} server unavailable: {exc}")
        connections, tasks = _scenarios(dialect, password, wrong)
        server = ConductorServer("/api").start()
        # DEBUG: the most the worker and the SDK ever write to the log.
        env = {"CONDUCTOR_SERVER_URL": server.url, "SQLADAPTER_DATA_DIR": str(tmp_path), "CONDUCTOR_LOG_LEVEL": "DEBUG"}
        worker = WorkerProcess(["--threads", "2", "--poll-interval", "20"], {**env, **connections}, tmp_path / "worker.log")
        worker.start()
        try:
            worker.wait_started()
            # The inline-password task is the user's own input; the SDK logs polled inputs at
            # DEBUG, so that one runs after the log has been searched (below), at INFO.
            named = [(t, s) for t, s in tasks if "connection" in t]
            ids = server.add_tasks("query_sql", [t for t, _ in named])
            assert server.wait_for(lambda s: all(s.updates_for(i) for i in ids), 120), worker.log()[-3000:]
        finally:
            worker.stop()
        log = worker.log()
        bodies = [server.updates_for(i)[-1].body for i in ids]

        worker = WorkerProcess(
            ["--threads", "2", "--poll-interval", "20"], {**env, "CONDUCTOR_LOG_LEVEL": "INFO", **connections},
            tmp_path / "worker-info.log",
        ).start()
        try:
            worker.wait_started()
            inline = [(t, s) for t, s in tasks if "connection_string" in t]
            inline_ids = server.add_tasks("query_sql", [t for t, _ in inline])
            assert server.wait_for(lambda s: all(s.updates_for(i) for i in inline_ids), 60), worker.log()[-3000:]
        finally:
            worker.stop()
            server.stop()
        log += worker.log()
        bodies += [server.updates_for(i)[-1].body for i in inline_ids]

    for (task, statuses), body in zip(named + inline, bodies):
        assert body["status"] in statuses, f"{task}: {body['status']} {body.get('reasonForIncompletion')}"
        if body["status"] != "COMPLETED":
            assert body["reasonForIncompletion"] and body["outputData"]["error"]["message"]
    needles = _needles(dialect, password, wrong, list(connections.values()))
    texts = [json.dumps(body) for body in bodies] + log.splitlines()
    hits = [(needle, text[:200]) for text in texts for needle in needles if needle in text]
    report(
        request.config,
        [
            f"secrets ({dialect}): {len(bodies)} tasks ({sum(b['status'] != 'COMPLETED' for b in bodies)} failed), "
            f"{len(log.splitlines())} worker log lines searched for {len(needles)} forms of the password and URLs: "
            f"{len(hits)} hits"
        ],
    )
    assert not hits, hits[:5]


@pytest.mark.servers
@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_the_cli_prints_no_password_or_url(dialect, tmp_path: Path):
    """`sqladapter query @name ...`: output and error text on the terminal, for success and failures."""
    password, wrong = _password(), _password()
    with exclusive_use():
        try:
            (_make_mysql_user if dialect == "mysql" else _make_postgres_role)(password)
        except Exception as exc:
            server_unavailable(f"{dialect} server unavailable: {exc}")
        connections, _ = _scenarios(dialect, password, wrong)
        env = {**os.environ, "SQLADAPTER_DATA_DIR": str(tmp_path), **connections}
        runs = []
        for name in ("good", "wrong", "down", "nodb", "badopt"):
            for query in ("SELECT id, label FROM secrets_probe", "SELEC 1", "DELETE FROM secrets_probe"):
                runs.append(
                    subprocess.run(
                        [sys.executable, "-m", "sqladapter", "query", f"@{dialect}_{name}", query],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )
                )
    assert runs[0].returncode == 0 and '"visible"' in runs[0].stdout
    assert all(run.returncode != 0 for run in runs[1:3])
    needles = _needles(dialect, password, wrong, list(connections.values()))
    hits = [(n, run.args[-2:]) for run in runs for n in needles if n in run.stdout + run.stderr]
    assert not hits, hits[:5]


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
@pytest.mark.parametrize("shape", ["{a}@{b}", "{a}:{b}@x", "{a}\u00fc{b}", "{a} {b}", "{a}@{b}@{a}"])
def test_a_configured_password_that_cannot_be_read_unambiguously_is_refused_and_not_echoed(
    dialect, shape, monkeypatch, caplog, tmp_path
):
    """An unencoded @ (or a non-ASCII letter) moves the split between password and host, and the
    driver would name the "host", a piece of the password, in its error. Refused before any
    connection, at the first task and at worker start, with no piece of the password shown."""
    from sqladapter import Runtime

    caplog.set_level("DEBUG")
    first, second = "Xq9" + secrets.token_hex(4), "tail" + secrets.token_hex(4)
    password = shape.format(a=first, b=second)
    url = f"{dialect}://{USER}:{password}@{ADDRESSES[dialect]}:{PORTS[dialect]}/{DATABASE}"
    monkeypatch.setenv("SQLADAPTER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SQLADAPTER_CONNECTION_AMBIGUOUS", url)
    with pytest.raises(SqlAdapterError, match="percent-encoded") as caught:
        run_query(connection="ambiguous", query="SELECT 1 AS one")
    assert caught.value.type == "connection_config" and not caught.value.retryable
    with pytest.raises(SqlAdapterError, match="percent-encoded") as at_start:
        Runtime().pools.check_named_connections()
    texts = [caught.value.message, at_start.value.message, caplog.text]
    assert not [t for t in texts if first in t or second in t]
    # The same password percent-encoded is read as written.
    monkeypatch.setenv("SQLADAPTER_CONNECTION_AMBIGUOUS", _url(dialect, password))
    assert Runtime().pools.check_named_connections()


def test_pieces_of_a_configured_password_are_redacted_from_driver_errors(tmp_path, monkeypatch):
    """Defence in depth: a driver error quoting part of the credentials shows none of it."""
    from sqladapter import Runtime
    from sqladapter.settings import Settings

    password = "Zq7-" + secrets.token_hex(4) + ":tail" + secrets.token_hex(4)
    url = f"postgresql://{USER}:{password}@{servers.POSTGRESQL_HOST}/{DATABASE}"
    monkeypatch.setenv("SQLADAPTER_CONNECTION_PIECES", url)
    with Runtime(Settings.from_env({"SQLADAPTER_DATA_DIR": str(tmp_path)})) as runtime:
        target = runtime.resolve(connection="pieces")
    head, _, tail = password.partition(":")
    from sqladapter.errors import redact

    leaked = f"could not translate host name \"{tail}@127.0.0.1\"; user {USER}:{head}"
    cleaned = redact(leaked, target.secrets)
    assert head not in cleaned and tail not in cleaned


def test_the_worker_refuses_to_start_with_an_ambiguous_named_connection(tmp_path):
    password = "Xq9" + secrets.token_hex(4) + "@" + "tail" + secrets.token_hex(4)
    env = {
        **os.environ,
        "SQLADAPTER_DATA_DIR": str(tmp_path),
        "SQLADAPTER_CONNECTION_BROKEN": f"postgresql://{USER}:{password}@{servers.POSTGRESQL_HOST}/{DATABASE}",
        "CONDUCTOR_SERVER_URL": "http://127.0.0.1:9/api",
    }
    result = subprocess.run([sys.executable, "-m", "sqladapter", "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "'broken'" in result.stderr and "percent-encoded" in result.stderr
    for piece in password.split("@"):
        assert piece not in result.stderr + result.stdout
