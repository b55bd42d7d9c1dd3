"""Cancel racing the worker on PostgreSQL, 50 rounds: every order ends either cancelled with
no transaction sent, or confirmed with the cancel refused (409), never both."""
from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from orderengine.errors import NotCancellable
from orderengine.intake import submit_order
from tests.integration.watching import all_final, order_request, wait_for
from venues.chain import sim_transactions

pytestmark = pytest.mark.integration

ROUNDS = 50


def sent_for(engine, order_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(sim_transactions.c.status)
                            .where(sim_transactions.c.client_tx_id.contains(order_id))).scalars().all()


def test_a_cancel_racing_the_worker_either_wins_before_anything_is_sent_or_is_refused(fleet):
    api = fleet.runtime(mock_quote_latency_ms=5, mock_exec_latency_ms=50)
    fleet.worker(fleet.runtime(mock_quote_latency_ms=5, mock_exec_latency_ms=50))
    rng = random.Random(7)
    outcomes = {}
    for _ in range(ROUNDS):
        order_id = submit_order(api, order_request()).order_id
        # catch it at a different point of its life each round: pending, routing, building, later
        wait_for(lambda: api.store.get(order_id).last_seq >= rng.choice([1, 1, 2, 2, 3]), timeout=10)
        try:
            outcomes[order_id] = api.store.cancel(order_id, "test").status
        except NotCancellable:
            outcomes[order_id] = "refused"
    wait_for(lambda: all_final(api.engine, list(outcomes)), timeout=60, what="every order to end")
    kinds = set()
    for order_id, answer in outcomes.items():
        final = api.store.get(order_id).status
        txs = sent_for(api.engine, order_id)
        if answer == "cancelled":
            assert final == "cancelled" and txs == [], (order_id, final, txs)
        else:
            # refused from `building` on: the swap was on its way, and the order ends as it lands
            assert answer == "refused" and final in ("confirmed", "failed") and txs, (order_id, final, txs)
        kinds.add(answer)
        statuses = [e.status.value for e in api.store.events(order_id)]
        assert not ({"cancelled", "confirmed"} <= set(statuses)), statuses
    assert kinds == {"cancelled", "refused"}  # both sides of the race were exercised
