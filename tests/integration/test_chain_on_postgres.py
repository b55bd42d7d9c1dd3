"""The simulated chain's batch send on PostgreSQL (one unnest INSERT ... ON CONFLICT DO
NOTHING): a batch sent twice, and two processes sending it at once, fill each swap once."""
from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from orderengine.migrate import upgrade
from orderengine.tokens import SOL, USDC
from orderengine.venue import QuoteRequest, SwapRequest, TxState, VenueEnvironment
from venues.chain import SimChain, sim_transactions
from venues.raydium import Raydium

pytestmark = pytest.mark.integration


@pytest.fixture
def raydium_twice(pg_url):
    """Two Raydium venues on two chain objects, as two processes would have them."""
    upgrade(pg_url)
    env = VenueEnvironment(chain_url=pg_url, quote_latency_ms=0, exec_latency_ms=0)
    return tuple(Raydium(env, chain=SimChain(pg_url, exec_latency_ms=0)) for _ in range(2))


def sends(venue, n: int):
    (quote,) = venue.quotes([QuoteRequest(SOL, USDC, Decimal("0.01"))])
    swap = SwapRequest(quote.pool_id, SOL, USDC, Decimal("0.01"), quote.amount_out * Decimal("0.9"))
    return [(swap, f"order-{i}:1") for i in range(n)]


def test_a_batch_sent_twice_and_by_two_processes_at_once_fills_each_swap_once(raydium_twice, pg_url):
    first, second = raydium_twice
    batch = sends(first, 50)
    barrier = threading.Barrier(2)
    answers: dict[str, list] = {}

    def send(name, venue):
        barrier.wait()
        answers[name] = venue.execute_many(batch)

    threads = [threading.Thread(target=send, args=(n, v)) for n, v in (("a", first), ("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    again = first.execute_many(batch)

    assert answers["a"] == answers["b"] == again and all(isinstance(s, str) for s in again)
    statuses = first.statuses(again)
    assert [s.state for s in statuses] == [TxState.CONFIRMED] * 50
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(sim_transactions)).scalar()
    finally:
        engine.dispose()
    assert rows == 50
