"""Group commit on PostgreSQL and Redis: an order alone and a burst of them are each
stored with their `pending` event and queued, the burst in one statement."""
from __future__ import annotations

import threading
from decimal import Decimal

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
    request = order_request(amountIn="0.123456789", clientOrderId="bot-7")
    event = runtime.intake.submit(request).event
    stored = runtime.store.events(event.order_id)
    assert [(e.seq, e.status.value, e.attempt) for e in stored] == [(1, "pending", 0)]
    assert stored[0].data == request.to_dict() == event.data
    row = runtime.store.get(event.order_id)
    assert (row.amount_in, row.client_order_id, row.status, row.last_seq) == \
        (Decimal("0.123456789"), "bot-7", "pending", 1)
    assert row.created_at == row.updated_at == stored[0].at == event.at
    assert row.work_token and row.work_owner is None
    assert runtime.huey.pending_count() == 1


def test_a_burst_is_stored_in_one_statement_and_queued(runtime):
    runtime.intake.close()
    runtime.intake = Intake(runtime.store, runtime.queue_new_orders, window_s=1.0, writers=1)
    writes = []
    sa.event.listen(runtime.engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *args: writes.append(statement)
                    if "INSERT" in statement else None)
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
    assert len(writes) == 1  # one statement, atomic by itself
    assert count(runtime.engine, orders) == 20 and count(runtime.engine, order_events) == 20
    assert runtime.huey.pending_count() == 1  # one wake-up for the whole group


def test_a_burst_of_several_callers_stores_each_order_as_its_callers(runtime):
    runtime.intake.close()
    runtime.intake = Intake(runtime.store, runtime.queue_new_orders, window_s=1.0, writers=1)
    barrier, placed = threading.Barrier(12), []

    def submit(owner: str) -> None:
        barrier.wait()
        placed.append((owner, runtime.intake.submit(order_request(), owner=owner).order_id))
    threads = [threading.Thread(target=submit, args=(("alice", "bob", "")[i % 3],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert runtime.store.owners([order_id for _, order_id in placed]) == {i: o for o, i in placed}
    for owner in ("alice", "bob", ""):
        listed = {r.id for r in runtime.store.page(before=None, limit=50, owner=owner)}
        assert listed == {i for o, i in placed if o == owner}
