"""Intake's unknown commit: the connection fails on the COMMIT, after or before the server
committed. The client's answer follows what the database has: 201 (and queued) for stored
orders, 503 only for orders that were not stored."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from orderengine.errors import ServiceUnavailable
from orderengine.intake import submit_order
from orderengine.schemas import parse_order_request
from tests.unit.conftest import SOL_USDC, wait_terminal


class CommitFails:
    """A test double at the DB-API boundary: the next `times` commits of intake's writer
    reach the server (`after_commit=True`) or not, then the connection reports a failure.
    (Other threads, a worker's, commit as usual.)"""

    def __init__(self, engine, after_commit: bool, times: int = 1) -> None:
        self.dialect = engine.dialect
        self.real = engine.dialect.do_commit
        self.after_commit = after_commit
        self.left = times

    def __call__(self, dbapi_connection) -> None:
        if self.left <= 0 or not threading.current_thread().name.startswith("intake-writer"):
            return self.real(dbapi_connection)
        self.left -= 1
        if self.after_commit:
            self.real(dbapi_connection)
        else:
            dbapi_connection.rollback()
        raise sqlite3.OperationalError("server closed the connection unexpectedly")


def test_an_order_committed_whose_commit_answer_was_lost_is_answered_201_and_runs(runtime, worker, venues,
                                                                                   monkeypatch):
    monkeypatch.setattr(runtime.engine.dialect, "do_commit", CommitFails(runtime.engine, after_commit=True))
    accepted = submit_order(runtime, parse_order_request(SOL_USDC))
    row = wait_terminal(runtime, accepted.order_id)
    assert row.status == "confirmed"
    assert [e.seq for e in runtime.store.events(accepted.order_id)][0] == 1
    assert venues[0].fills + venues[1].fills == 1


def test_an_order_with_a_key_committed_whose_commit_answer_was_lost_is_answered_201_and_replayed(
        runtime, worker, monkeypatch):
    monkeypatch.setattr(runtime.engine.dialect, "do_commit", CommitFails(runtime.engine, after_commit=True))
    first = submit_order(runtime, parse_order_request(SOL_USDC), idempotency_key="k-1")
    again = submit_order(runtime, parse_order_request(SOL_USDC), idempotency_key="k-1")
    assert again.order_id == first.order_id and again.replayed
    assert wait_terminal(runtime, first.order_id).status == "confirmed"


def test_an_order_whose_commit_failed_before_the_server_committed_is_answered_503_and_not_stored(
        runtime, monkeypatch):
    monkeypatch.setattr(runtime.engine.dialect, "do_commit",
                        CommitFails(runtime.engine, after_commit=False, times=2))
    with pytest.raises(ServiceUnavailable):
        submit_order(runtime, parse_order_request(SOL_USDC))
    assert runtime.store.page(before=None, limit=10) == []


def test_an_order_whose_commit_landed_only_after_intake_asked_is_answered_201_not_refused(
        runtime, worker, venues, monkeypatch):
    """Seen in the crash matrix: the connection died with the COMMIT on its way, intake asked
    which orders were stored before the server had finished that COMMIT (none yet), inserted
    again and hit the unique key: the order was there after all, and must not be refused."""
    from sqlalchemy.exc import OperationalError

    store = runtime.store
    real_create, real_first = store.create_many, store.first_events
    calls = {"create": 0, "first": 0}

    def create_many(*args, **kwargs):
        calls["create"] += 1
        events = real_create(*args, **kwargs)   # the server commits...
        if calls["create"] == 1:                # ...but the answer is lost, with the connection
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"),
                                   connection_invalidated=True)
        return events

    def first_events(ids):
        calls["first"] += 1
        return {} if calls["first"] == 1 else real_first(ids)   # asked before the COMMIT landed

    monkeypatch.setattr(store, "create_many", create_many)
    monkeypatch.setattr(store, "first_events", first_events)
    accepted = submit_order(runtime, parse_order_request(SOL_USDC))

    assert calls == {"create": 2, "first": 2}
    assert wait_terminal(runtime, accepted.order_id).status == "confirmed"
    assert venues[0].fills + venues[1].fills == 1
