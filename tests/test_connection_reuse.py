"""Connections kept by worker threads: reused by their thread, returned when the thread ends or a
query fails, and never so many that other threads wait for the pool."""

from __future__ import annotations

import threading

import pytest

from sqladapter import QueryError, run_query
from sqladapter.runtime import default

QUERY = "SELECT name FROM people ORDER BY name"


def _pool(people_db):
    return default().resolve("fake_people.db").engine.pool


def _in_threads(count: int, work) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a query thread did not finish within 60 s"
    return errors


def test_a_thread_reuses_one_connection_for_its_queries(people_db):
    pool = _pool(people_db)
    for _ in range(5):
        assert run_query(connection_string="fake_people.db", query=QUERY)["rowCount"] == 5
    assert pool.checkedout() + pool.checkedin() == 1


def test_connections_of_ended_threads_go_back_to_the_pool(people_db):
    pool = _pool(people_db)
    # More threads one after another than the pool and its overflow hold (8 + 8): each keeps
    # a connection and ends; if those stayed checked out, the later threads would wait on the
    # pool and fail.
    for _ in range(3):
        errors = _in_threads(10, lambda: run_query(connection_string="fake_people.db", query=QUERY))
        assert errors == []
    run_query(connection_string="fake_people.db", query=QUERY)
    assert pool.checkedout() <= 1  # only this thread's own, once the ended threads' came back


def test_more_concurrent_threads_than_the_pool_keeps_all_succeed(people_db):
    barrier = threading.Barrier(12)

    def work() -> None:
        run_query(connection_string="fake_people.db", query=QUERY)
        barrier.wait(30)  # all twelve hold their connection at once
        for _ in range(3):
            assert run_query(connection_string="fake_people.db", query=QUERY)["rowCount"] == 5

    assert _in_threads(12, work) == []


def test_a_failed_query_returns_the_kept_connection_and_the_next_one_works(people_db):
    pool = _pool(people_db)
    run_query(connection_string="fake_people.db", query=QUERY)
    with pytest.raises(QueryError):
        run_query(connection_string="fake_people.db", query="SELECT no_such_column FROM people")
    assert pool.checkedout() == 0  # back in the pool after the failure
    assert run_query(connection_string="fake_people.db", query=QUERY)["rowCount"] == 5
