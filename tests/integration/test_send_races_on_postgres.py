"""Two processes sending the same client transaction id at the same moment, on PostgreSQL:
exactly one fill.

A barrier alone makes the two sends start together, but one may still be done before
the other begins. Here the race is forced: the first send to reach its COMMIT is held
there until PostgreSQL shows the other send's INSERT waiting on the first's uncommitted
row (`pg_stat_activity.wait_event_type = 'Lock'`); only then does the first commit. So
the second INSERT meets a conflicting row that was not visible when it started: the
case `ON CONFLICT DO NOTHING` (venues/chain/tables.py) exists for.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from decimal import Decimal
from typing import Callable, Iterator

import psycopg
import pytest
import sqlalchemy as sa

from orderengine.migrate import upgrade
from orderengine.tokens import SOL, USDC
from orderengine.venue import SwapRequest, TxState, VenueEnvironment
from venues import cpmm, meteora, raydium
from venues.chain import SimChain, engine_for, sim_transactions

pytestmark = pytest.mark.integration

POOL = "RacePoolSoLUsdc11111111111111111111111111111"
LAMPORTS = 10**9
VENUE_CLASSES = {"raydium": raydium.Raydium, "meteora": meteora.Meteora}


@pytest.fixture
def chain_pg(pg_url) -> str:
    upgrade(pg_url)
    yield pg_url
    engine_for(pg_url).dispose()  # the chain keeps one engine per URL per process


def blocked_on_a_lock(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock'").fetchone()[0] > 0


@contextmanager
def first_commit_waits_for_the_other_insert(url: str) -> Iterator[list[str]]:
    """While inside, the first COMMIT on the chain's engine waits (10 s at most) until
    another transaction waits on a lock. Yields a list that says what happened."""
    engine = engine_for(url)
    dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    first = threading.Lock()
    seen: list[str] = []

    def hold(conn) -> None:
        if not first.acquire(blocking=False):
            return
        deadline = time.monotonic() + 10
        while not blocked_on_a_lock(dsn):
            if time.monotonic() > deadline:
                seen.append("the other send never waited on our row")
                return
            time.sleep(0.01)
        seen.append("overlapped")

    sa.event.listen(engine, "commit", hold)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "commit", hold)


def at_once(send: Callable[[int], str]) -> list:
    """Run send(0) and send(1) on two threads released by one barrier; their answers."""
    barrier = threading.Barrier(2)
    answers: list = [None, None]

    def run(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = send(i)
        except Exception as exc:  # kept: a send that raises is a failed race
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return answers


def transactions(url: str) -> int:
    with engine_for(url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sim_transactions)).scalar()


def test_two_processes_sending_one_client_tx_id_at_the_same_moment_make_one_transaction(chain_pg):
    chains = [SimChain(chain_pg, exec_latency_ms=0) for _ in range(2)]  # as two processes hold them
    chains[0].ensure_pool(POOL, "cpmm", {**cpmm.new_pool(100 * LAMPORTS, 15_000 * 10**6, 2500),
                                          "decimals_a": 9, "decimals_b": 6})
    for chain in chains:
        chain.pools(max_age_ms=0)

    with first_commit_waits_for_the_other_insert(chain_pg) as seen:
        answers = at_once(lambda i: chains[i].send("tx-race", POOL, "cpmm", True, LAMPORTS, 0))

    assert seen == ["overlapped"]
    assert isinstance(answers[0], str) and answers[0] == answers[1], answers
    assert transactions(chain_pg) == 1
    assert chains[1].status(answers[0]).state is TxState.CONFIRMED
    assert chains[1].pool_state(POOL)["reserve_a"] == 101 * LAMPORTS, "filled more than once"


@pytest.mark.parametrize("name", VENUE_CLASSES)
def test_two_workers_executing_one_client_tx_id_at_the_same_moment_fill_once(chain_pg, name):
    env = VenueEnvironment(chain_url=chain_pg, quote_latency_ms=0, exec_latency_ms=0)
    venues = [VENUE_CLASSES[name](env, chain=SimChain(chain_pg, exec_latency_ms=0)) for _ in range(2)]
    quote = venues[0].quote(SOL, USDC, Decimal(10))
    before = _sol_usdc(venues[1].pools())
    swap = SwapRequest(quote.pool_id, SOL, USDC, Decimal(10), Decimal(0))

    with first_commit_waits_for_the_other_insert(chain_pg) as seen:
        answers = at_once(lambda i: venues[i].execute(swap, "order-race:1"))

    assert seen == ["overlapped"]
    assert isinstance(answers[0], str) and answers[0] == answers[1], answers
    assert transactions(chain_pg) == 1
    status = venues[1].status(answers[0])
    assert status.state is TxState.CONFIRMED and status.amount_out == quote.amount_out
    moved = _sol_usdc(venues[1].pools()).liquidity["USDC"] - before.liquidity["USDC"]
    assert moved == -quote.amount_out, "filled more than once"


def _sol_usdc(pools):
    return next(p for p in pools if (p.token_a, p.token_b) == ("SOL", "USDC"))
