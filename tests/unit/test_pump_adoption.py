"""No order held and forgotten: a worker finds and runs the orders the database says it
holds but it does not know of (a claim whose answer was lost, any order it dropped).

Without this, such orders wait: the worker's heartbeat keeps the sweep away, new
orders end EXPIRED after ORDER_TTL_MS (30 s here), and one in `submitted` forever."""
from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from orderengine import pump
from orderengine.clock import utcnow
from orderengine.intake import submit_order
from orderengine.runtime import Runtime
from orderengine.schemas import parse_order_request
from orderengine.store import Work, new_token
from orderengine.worker import EmbeddedWorker
from tests.fakes import FakeVenue, registry_of
from tests.unit.conftest import SOL_USDC, wait_terminal

HAPPY = ["pending", "routing", "building", "submitted", "confirmed"]
BOUND_S = 5  # well under ORDER_TTL_MS: an order found by the worker runs long before it would expire


def submit(runtime) -> str:
    return submit_order(runtime, parse_order_request(SOL_USDC)).order_id


def statuses(runtime, order_id: str) -> list[str]:
    return [e.status.value for e in runtime.store.events(order_id)]


def lose_the_answer_of_the_first_claim(store) -> list[str]:
    """The store boundary as PostgreSQL behind a dying connection: the first claim that
    takes orders commits, then its caller gets OperationalError. The ids it took."""
    real, lost = store.claim_due, []

    def claim_due(owner, limit, **kwargs):
        rows = real(owner, limit, **kwargs)
        if rows and not lost:
            lost.extend(r.id for r in rows)
            raise sa.exc.OperationalError("COMMIT", {}, ConnectionError("server closed the connection unexpectedly"))
        return rows

    store.claim_due = claim_due
    return lost


@pytest.fixture
def started():
    workers = []

    def start(runtime) -> EmbeddedWorker:
        worker = EmbeddedWorker(runtime)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def test_orders_taken_by_a_claim_whose_answer_was_lost_still_execute_once(runtime, venues, started,
                                                                          monkeypatch, caplog):
    monkeypatch.setattr(pump, "AUDIT_S", 60)  # the claim's own recovery, not the self-audit
    ids = [submit(runtime) for _ in range(3)]
    lost = lose_the_answer_of_the_first_claim(runtime.store)

    started(runtime)

    rows = [wait_terminal(runtime, i, timeout=BOUND_S) for i in ids]
    assert sorted(lost) == sorted(ids), "the first claim should have taken them all"
    assert [r.status for r in rows] == ["confirmed"] * 3
    assert all(statuses(runtime, i) == HAPPY for i in ids)
    assert sum(v.executions for v in venues) == sum(v.fills for v in venues) == 3
    assert any("answer was lost" in r.getMessage() for r in caplog.records)


def test_an_order_held_in_the_database_but_unknown_to_its_worker_is_adopted_once(runtime, venues, started,
                                                                                monkeypatch, caplog):
    monkeypatch.setattr(pump, "AUDIT_S", 0.1)
    started(runtime)
    me = runtime.worker.worker_id
    # held by the live worker, which never claimed it: no claim takes it, no sweep either
    event = runtime.store.create(parse_order_request(SOL_USDC), Work(new_token(), me, utcnow()))
    caplog.set_level(logging.WARNING, logger="orderengine.pump")

    row = wait_terminal(runtime, event.order_id, timeout=BOUND_S)

    assert row.status == "confirmed"
    assert statuses(runtime, event.order_id) == HAPPY
    assert sum(v.executions for v in venues) == sum(v.fills for v in venues) == 1
    adopted = [r for r in caplog.records if "adopting" in r.getMessage()]
    assert [r.order_ids for r in adopted] == [[event.order_id]]
    assert runtime.worker.pump.alive


def test_the_self_audit_adopts_nothing_a_worker_is_running(settings, started, monkeypatch, caplog):
    """Orders in every place a worker keeps them (waiting for quotes, in a step, on the
    timer between polls), audited far more often than they move: none is taken for
    forgotten, so none is run by two threads (each is sent once)."""
    monkeypatch.setattr(pump, "AUDIT_S", 0.01)
    venue = FakeVenue("slow", quote_delay=0.1, confirm_after=3)
    rt = Runtime(settings, registry=registry_of(venue))
    started(rt)  # stopped (and the runtime closed) after the test
    ids = [submit(rt) for _ in range(10)]

    deadline = time.monotonic() + 20
    rows = [wait_terminal(rt, i, timeout=max(0.1, deadline - time.monotonic())) for i in ids]

    assert [r.status for r in rows] == ["confirmed"] * 10
    assert venue.executions == venue.fills == 10
    assert not [r for r in caplog.records if "adopting" in r.getMessage() or "answer was lost" in r.getMessage()]


def test_failed_claims_while_orders_wait_on_the_timer_adopt_none_of_them(settings, started, monkeypatch, caplog):
    """Claims that fail (taking nothing) while the worker polls its submitted orders: the
    look for a lost claim's orders must not take those it is about to poll for forgotten."""
    monkeypatch.setattr(pump, "AUDIT_S", 60)
    monkeypatch.setattr(pump, "DB_RETRY_S", 0.01)
    venue = FakeVenue("slow", confirm_after=20)
    rt = Runtime(settings, registry=registry_of(venue))
    real = rt.store.claim_due

    def failing_when_empty(owner, limit, **kwargs):
        rows = real(owner, limit, **kwargs)
        if not rows:
            raise sa.exc.OperationalError("UPDATE", {}, ConnectionError("server closed the connection"))
        return rows

    rt.store.claim_due = failing_when_empty
    started(rt)
    ids = [submit(rt) for _ in range(10)]

    deadline = time.monotonic() + 20
    rows = [wait_terminal(rt, i, timeout=max(0.1, deadline - time.monotonic())) for i in ids]

    assert [r.status for r in rows] == ["confirmed"] * 10
    assert venue.executions == venue.fills == 10
    assert not [r for r in caplog.records if "answer was lost" in r.getMessage()]
