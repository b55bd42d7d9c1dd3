"""A worker stopped gracefully (SIGTERM, a deploy) hands its orders in flight back
through the shared queue; another worker finishes them, each filled once."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from orderengine.intake import submit_order
from tests.integration.watching import HAPPY_PATH, all_final, logged_seqs, order_request, wait_for
from venues.chain import sim_transactions

pytestmark = pytest.mark.integration

SLOW_CHAIN = dict(mock_exec_latency_ms=3000)  # orders stay in `submitted` long enough to hand over


def test_orders_in_flight_on_a_stopped_worker_are_finished_by_another(fleet):
    first = fleet.worker(fleet.runtime(**SLOW_CHAIN))
    api = first.runtime
    order_ids = [submit_order(api, order_request()).order_id for _ in range(3)]
    wait_for(lambda: all(api.store.get(o).status == "submitted" for o in order_ids), timeout=10,
             what="the orders to be submitted")
    second = fleet.worker(fleet.runtime(**SLOW_CHAIN))

    fleet.stop(first)
    assert not all_final(second.runtime.engine, order_ids)  # handed over in flight, not finished

    engine = second.runtime.engine
    wait_for(lambda: all_final(engine, order_ids), timeout=15, what="the other worker to finish them")
    store = second.runtime.store
    seqs = logged_seqs(engine)
    with engine.connect() as conn:
        tx_ids = conn.execute(sa.select(sim_transactions.c.client_tx_id)).scalars().all()
    for order_id in order_ids:
        assert [e.status.value for e in store.events(order_id)] == HAPPY_PATH
        assert seqs[order_id] == [1, 2, 3, 4, 5]
        assert len([t for t in tx_ids if order_id in t]) == 1
