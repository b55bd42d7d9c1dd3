"""Redis keeps no queue across a restart: the queue carries only wake-ups, and workers
claim due orders from the orders table, the source of truth, each exactly once."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from orderengine.clock import utcnow
from orderengine.intake import submit_order
from orderengine.store import Work, new_token
from tests.integration.watching import (
    HAPPY_PATH, all_final, order_request, statuses_by_order, wait_for,
)

pytestmark = pytest.mark.integration

def test_orders_whose_queued_steps_were_lost_with_redis_are_still_executed(fleet):
    api = fleet.runtime()
    order_ids = [submit_order(api, order_request()).order_id for _ in range(3)]
    assert api.huey.pending_count() == 3  # one wake-up per order taken in
    api.redis.flushdb()  # Redis restarted without persistence: the queue is gone

    fleet.worker(fleet.runtime())
    wait_for(lambda: all_final(api.engine, order_ids), timeout=15, what="the lost orders to finish")
    assert set(statuses_by_order(api.engine, order_ids).values()) == {"confirmed"}
    for order_id in order_ids:
        assert [e.status.value for e in api.store.events(order_id)] == HAPPY_PATH


def test_two_workers_claiming_at_once_never_take_the_same_order(fleet):
    runtime = fleet.runtime()
    due = Work(new_token(), None, utcnow() - dt.timedelta(seconds=1))
    order_ids = {runtime.store.create(order_request(), due).order_id for _ in range(60)}
    barrier = threading.Barrier(2)
    claimed: dict[str, list[str]] = {}

    def claim(owner: str) -> None:
        barrier.wait()
        taken = []
        while rows := runtime.store.claim_due(owner, limit=7):
            taken += [r.id for r in rows]
        claimed[owner] = taken

    threads = [threading.Thread(target=claim, args=(f"worker-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    first, second = claimed["worker-0"], claimed["worker-1"]
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == sorted(order_ids)
    owners = {runtime.store.get(i).work_owner for i in order_ids}
    assert owners <= {"worker-0", "worker-1"}
