"""Nothing stuck, nothing filled twice: a live worker's sweep finishes what a dead
worker left, on PostgreSQL and Redis, and an order stopped in `building` is
settled by asking the venue before anything is sent again."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from orderengine import pump
from orderengine.clock import utcnow
from orderengine.lifecycle import Status
from orderengine.models import workers
from orderengine.routing import QuoteFetcher, decide
from orderengine.store import Work, new_token
from orderengine.tokens import SOL, USDC
from orderengine.venue import SwapRequest
from tests.integration.watching import HAPPY_PATH, order_request, status_of, wait_for
from venues.chain import sim_transactions

pytestmark = pytest.mark.integration

DEAD_WORKER = "gone-host:4242:deadbeef"
AMOUNT = Decimal("0.75")


def register_dead_worker(engine, heartbeat_age: dt.timedelta | None) -> None:
    """A worker on another host: no heartbeat row at all, or one that stopped beating."""
    if heartbeat_age is None:
        return
    then = utcnow() - heartbeat_age
    with engine.begin() as conn:
        conn.execute(sa.insert(workers).values(id=DEAD_WORKER, host="gone-host", pid=4242,
                                               started_at=then, last_seen=then))


def chain_txs_of(engine, order_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(sim_transactions)
                            .where(sim_transactions.c.client_tx_id.contains(order_id))).all()


def record_sends(venue) -> list[str]:
    """The client tx ids the worker sends through `venue` from now on."""
    sent: list[str] = []
    execute_many = venue.execute_many

    def recording(sends):
        sent.extend(client_tx_id for _, client_tx_id in sends)
        return execute_many(sends)
    venue.execute_many = recording
    return sent


def order_stopped_in_building(runtime, sent_before_crash: bool, owner: str = DEAD_WORKER) -> tuple[str, dict]:
    """What a worker that died between the routing decision and (maybe) the send
    leaves behind: the `building` event with a real decision, held by the dead worker
    (or by `owner`)."""
    token = new_token()
    held_by_the_dead = Work(token, owner, utcnow())
    order_id = runtime.store.create(order_request(amountIn=str(AMOUNT)), held_by_the_dead).order_id
    runtime.store.transition(order_id, Status.ROUTING, token=token, attempt=1, changes={"attempts": 1},
                             data={"venues": sorted(runtime.venues)},
                             work=Work(token, owner, utcnow()))
    fetcher = QuoteFetcher(runtime.venues, timeout_s=5)
    try:
        outcomes = fetcher.fetch_now(SOL, USDC, AMOUNT)
    finally:
        fetcher.close()
    decision = dict(decide(outcomes, SOL, USDC, AMOUNT, 50), clientTxId=f"{order_id}:1")
    runtime.store.transition(order_id, Status.BUILDING, token=token, data=decision,
                             changes={"venue": decision["venue"]})
    if sent_before_crash:
        venue = runtime.venues[decision["venue"]]
        venue.execute(SwapRequest(decision["pool"], SOL, USDC, AMOUNT, Decimal(decision["minAmountOut"])),
                      decision["clientTxId"])
    return order_id, decision


@pytest.mark.parametrize("heartbeat_age", [None, dt.timedelta(hours=1)],
                         ids=["no-heartbeat", "stale-heartbeat"])
def test_an_order_held_by_a_dead_worker_is_taken_over_and_confirmed(fleet, runtime, heartbeat_age):
    register_dead_worker(runtime.engine, heartbeat_age)
    order_id = runtime.store.create(order_request(), Work(new_token(), DEAD_WORKER, utcnow())).order_id
    # Nothing is queued for it: only the sweep of a live worker can find it.
    fleet.worker(runtime)
    wait_for(lambda: status_of(runtime.engine, order_id) == "confirmed", timeout=15, what="takeover")
    assert [e.status.value for e in runtime.store.events(order_id)] == HAPPY_PATH
    assert len(chain_txs_of(runtime.engine, order_id)) == 1


@pytest.mark.parametrize("sent_before_crash", [True, False], ids=["sent", "not-sent"])
def test_an_order_stopped_in_building_resumes_by_lookup_and_fills_once(fleet, runtime, sent_before_crash):
    order_id, decision = order_stopped_in_building(runtime, sent_before_crash)
    sends = record_sends(runtime.venues[decision["venue"]])
    fleet.worker(runtime)
    wait_for(lambda: status_of(runtime.engine, order_id) == "confirmed", timeout=15, what="resume")

    events = runtime.store.events(order_id)
    assert [(e.seq, e.status.value) for e in events] == list(enumerate(HAPPY_PATH, start=1))
    assert events[2].data == decision  # the decision was not taken again
    txs = chain_txs_of(runtime.engine, order_id)
    assert [tx.client_tx_id for tx in txs] == [f"{decision['venue']}:{order_id}:1"]
    assert txs[0].status == "confirmed"
    row = runtime.store.get(order_id)
    assert (row.tx_hash, row.attempts) == (txs[0].signature, 1)
    assert events[3].data["txHash"] == events[4].data["txHash"] == txs[0].signature
    # Asked the venue first: what was sent is not sent again; what was not is sent once.
    assert sends == ([] if sent_before_crash else [decision["clientTxId"]])


def test_an_order_its_live_worker_forgot_in_building_is_adopted_and_fills_once(fleet, runtime, monkeypatch):
    """Held in the database by a worker that beats on but does not know it (a claim whose
    answer was lost, say): no claim or sweep takes it; the worker's self-audit adopts it."""
    monkeypatch.setattr(pump, "AUDIT_S", 0.2)
    me = fleet.worker(runtime).runtime.worker.worker_id
    order_id, decision = order_stopped_in_building(runtime, sent_before_crash=True, owner=me)
    sends = record_sends(runtime.venues[decision["venue"]])

    wait_for(lambda: status_of(runtime.engine, order_id) == "confirmed", timeout=15, what="adoption")

    assert [e.status.value for e in runtime.store.events(order_id)] == HAPPY_PATH
    assert [tx.status for tx in chain_txs_of(runtime.engine, order_id)] == ["confirmed"]
    assert sends == []  # looked up, found on the venue: not sent again
