"""Group commit on PostgreSQL and Redis: an order alone and a burst of them are each
stored with their `pending` event and queued, the burst in one transaction."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from orderengine.intake import Intake
from orderengine.models import order_events, orders
from tests.integration.watching import order_request

pytestmark = pytest.mark.integration


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_an_order_alone_is_stored_and_queued(runtime):
    event = runtime.intake.submit(order_request())
    assert [e.seq for e in runtime.store.events(event.order_id)] == [1]
    assert runtime.huey.pending_count() == 1


def test_a_burst_is_stored_in_one_transaction_and_queued(runtime):
    runtime.intake.close()
    runtime.intake = Intake(runtime.store, runtime.queue_new_orders, window_s=1.0, writers=1)
    commits = [0]
    sa.event.listen(runtime.engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    barrier, events = threading.Barrier(20), []

    def submit() -> None:
        barrier.wait()
        events.append(runtime.intake.submit(order_request()))
    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len({e.order_id for e in events}) == 20
    assert commits[0] == 1
    assert count(runtime.engine, orders) == 20 and count(runtime.engine, order_events) == 20
    assert runtime.huey.pending_count() == 20
