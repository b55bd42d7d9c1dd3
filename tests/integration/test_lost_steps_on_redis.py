"""Redis keeps no queue across a restart: steps lost with it are found again by the
sweep of a live worker (the orders table, not the queue, is the source of truth)."""
from __future__ import annotations

import datetime as dt

import pytest

from orderengine.clock import utcnow
from orderengine.intake import submit_order
from orderengine.store import Work, new_token
from tests.integration.watching import (
    HAPPY_PATH, all_final, holds_for, order_request, statuses_by_order, wait_for,
)

pytestmark = pytest.mark.integration

LOST_AFTER_MS = 1000


def test_orders_whose_queued_steps_were_lost_with_redis_are_still_executed(fleet):
    api = fleet.runtime(lost_task_after_ms=LOST_AFTER_MS)
    order_ids = [submit_order(api, order_request()).order_id for _ in range(3)]
    assert api.huey.pending_count() == 3
    api.redis.flushdb()  # Redis restarted without persistence: the queue is gone

    fleet.worker(fleet.runtime(lost_task_after_ms=LOST_AFTER_MS))
    wait_for(lambda: all_final(api.engine, order_ids), timeout=15, what="the lost orders to finish")
    assert set(statuses_by_order(api.engine, order_ids).values()) == {"confirmed"}
    for order_id in order_ids:
        assert [e.status.value for e in api.store.events(order_id)] == HAPPY_PATH


def test_a_lost_step_is_requeued_once_not_on_every_sweep(fleet):
    runtime = fleet.runtime(lost_task_after_ms=LOST_AFTER_MS, sweep_interval_ms=100)
    token = new_token()
    queued_long_ago = Work(token, None, utcnow() - dt.timedelta(seconds=5))
    order_id = runtime.store.create(order_request(), queued_long_ago).order_id
    runtime.start_worker()  # the sweeper, without consumer threads: queued steps stay visible

    wait_for(lambda: runtime.huey.pending_count() >= 1, timeout=5, what="the sweep to re-queue the order")
    requeued_token = runtime.store.get(order_id).work_token
    assert requeued_token != token
    # Due now, queued once: later sweeps leave it alone until it is overdue again.
    holds_for(lambda: runtime.huey.pending_count() == 1
              and runtime.store.get(order_id).work_token == requeued_token,
              duration=0.6, what="one queued step, one token")
