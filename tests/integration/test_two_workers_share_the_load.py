"""Two workers on one PostgreSQL and one Redis, as two hosts would run them."""
from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import sqlalchemy as sa

from orderengine.app import create_app
from tests.integration.watching import (
    HAPPY_PATH, all_final, logged_seqs, post_order, statuses_by_order, wait_for,
)
from venues.chain import sim_transactions

pytestmark = pytest.mark.integration

ORDERS = 50


@pytest.fixture
def two_workers(fleet, settings):
    """An API on runtime A; A and B each run an embedded worker.

    Returns the app, the runtimes, and how many order steps each runtime's worker ran."""
    runtimes = [fleet.runtime(mock_exec_latency_ms=50), fleet.runtime(mock_exec_latency_ms=50)]
    steps = collections.Counter()
    lock = threading.Lock()
    for name, runtime in zip("AB", runtimes):
        fleet.worker(runtime)
        executor = runtime.worker.executor
        submit = executor.submit

        def counted(batch, _name=name, _submit=submit):
            batch = list(batch)
            with lock:
                steps[_name] += len(batch)
            return _submit(batch)
        executor.submit = counted
    return create_app(settings, runtime=runtimes[0]), runtimes, steps


@pytest.fixture
def fifty_finished_orders(two_workers):
    app, runtimes, steps = two_workers

    def submit(i: int) -> str:
        amount = str(Decimal("0.01") * (i + 1))
        return post_order(app.test_client(), amountIn=amount, clientOrderId=f"load-{i}")

    with ThreadPoolExecutor(max_workers=5) as pool:
        order_ids = list(pool.map(submit, range(ORDERS)))
    engine = runtimes[0].engine
    wait_for(lambda: all_final(engine, order_ids), timeout=60, what=f"{ORDERS} orders to finish")
    return order_ids, engine, steps


def test_fifty_concurrent_orders_all_confirm_across_two_workers(fifty_finished_orders):
    order_ids, engine, steps = fifty_finished_orders
    assert len(set(order_ids)) == ORDERS
    assert set(statuses_by_order(engine, order_ids).values()) == {"confirmed"}
    assert steps["A"] > 0 and steps["B"] > 0, f"both workers should have run steps: {dict(steps)}"


def test_every_order_log_runs_one_to_n_without_gaps_or_repeats(fifty_finished_orders):
    order_ids, engine, _ = fifty_finished_orders
    seqs = logged_seqs(engine)
    with engine.connect() as conn:
        last = dict(conn.execute(sa.text("SELECT id, last_seq FROM orders")).all())
        histories = collections.defaultdict(list)
        for row in conn.execute(sa.text("SELECT order_id, status FROM order_events ORDER BY order_id, seq")):
            histories[row.order_id].append(row.status)
    for order_id in order_ids:
        assert seqs[order_id] == list(range(1, last[order_id] + 1)), order_id
        # A busy machine may time a quote out and retry: the story still starts and ends right.
        history = histories[order_id]
        assert history[:2] == ["pending", "routing"] and history[-3:] == HAPPY_PATH[-3:], history


def test_every_order_filled_exactly_once_on_chain(fifty_finished_orders):
    order_ids, engine, _ = fifty_finished_orders
    with engine.connect() as conn:
        txs = conn.execute(sa.select(sim_transactions.c.client_tx_id, sim_transactions.c.signature,
                                     sim_transactions.c.status)).all()
        tx_hashes = dict(conn.execute(sa.text("SELECT id, tx_hash FROM orders")).all())
    assert not [tx for tx in txs if tx.status == "pending"]  # nothing left in flight for finished orders
    confirmed = collections.defaultdict(list)
    for tx in txs:
        _venue, order_id, _attempt = tx.client_tx_id.split(":")
        if tx.status == "confirmed":
            confirmed[order_id].append(tx.signature)
    assert set(confirmed) == set(order_ids)
    for order_id in order_ids:
        assert confirmed[order_id] == [tx_hashes[order_id]], order_id
