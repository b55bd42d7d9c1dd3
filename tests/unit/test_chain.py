"""The simulated chain: idempotent sends, lazy landing in confirm order, final outcomes."""
from __future__ import annotations

import random
import threading
from datetime import timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from orderengine.venue import TxState
from venues import cpmm
from tests.fakes import FakeClock
from venues.chain import (
    SimChain, UnknownPool, b58encode, engine_for, normalize_url, sim_transactions, signature_for,
)

POOL = "TestPoolSoLUsdc1111111111111111111111111111"
LAMPORTS = 10**9


class ScriptedRandom(random.Random):
    """Draws latency factors from a script; never fails a transaction unless told."""

    def __init__(self, factors: list[float], fail: bool = False) -> None:
        super().__init__(0)
        self.factors, self.fail = list(factors), fail

    def uniform(self, a: float, b: float) -> float:
        return self.factors.pop(0) if self.factors else 1.0

    def random(self) -> float:
        return 0.0 if self.fail else 0.999999


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_chain(chain_url, clock):
    def make(**options) -> SimChain:
        options.setdefault("exec_latency_ms", 1000)
        options.setdefault("clock", clock)
        chain = SimChain(chain_url, **options)
        chain.ensure_pool(POOL, "cpmm", pool_state())
        return chain
    return make


def pool_state() -> dict:
    """100 SOL / 15,000 USDC at 0.25 %."""
    return {**cpmm.new_pool(100 * LAMPORTS, 15_000 * 10**6, 2500), "decimals_a": 9, "decimals_b": 6}


def test_base58_matches_known_vectors():
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58encode(b"\0\0\x01") == "112"
    assert b58encode(b"") == ""


def test_signature_looks_like_a_solana_signature_and_depends_only_on_the_id():
    signature = signature_for("order-1:attempt-1")
    assert 86 <= len(signature) <= 88
    assert set(signature) <= set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
    assert signature == signature_for("order-1:attempt-1") != signature_for("order-1:attempt-2")


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"])
def test_postgres_urls_are_read_as_psycopg(url):
    assert normalize_url(url) == "postgresql+psycopg://u@h/db"


def test_status_is_pending_before_confirm_time_and_confirmed_after(make_chain, clock):
    chain = make_chain()
    signature = chain.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    clock.advance(799)
    assert chain.status(signature).state is TxState.PENDING
    clock.advance(401)  # 1200 ms: past the latest possible confirm time
    status = chain.status(signature)
    assert status.state is TxState.CONFIRMED
    assert status.amount_in == Decimal("1.000000000")
    assert status.amount_out == Decimal("148.147231")  # as cpmm computes it, in USDC
    assert status.fee == Decimal("0.002500000")


def test_confirm_time_is_eighty_to_one_hundred_twenty_percent_of_the_latency(make_chain, clock, chain_url):
    chain = make_chain(exec_latency_ms=1000)
    for n in range(20):
        chain.send(f"tx-{n}", POOL, "cpmm", True, LAMPORTS, 0)
    with engine_for(chain_url).connect() as conn:
        confirm_times = conn.execute(sa.select(sim_transactions.c.confirm_at)).scalars().all()
    for confirm_at in confirm_times:
        delay = confirm_at.replace(tzinfo=timezone.utc) - clock.now
        assert timedelta(milliseconds=800) <= delay <= timedelta(milliseconds=1200)


def test_a_confirmed_transaction_moves_the_pool(make_chain, clock):
    chain = make_chain()
    chain.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    clock.advance(1200)
    chain.maintain()  # or a status poll: looking at the pool does not land anything
    state = chain.pool_state(POOL)
    assert state["reserve_a"] == 101 * LAMPORTS
    assert state["reserve_b"] == 15_000 * 10**6 - 148_147_231


def test_sending_the_same_client_tx_id_twice_fills_once(make_chain, clock, chain_url):
    chain = make_chain()
    first = chain.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    second = chain.send("tx-1", POOL, "cpmm", True, 5 * LAMPORTS, 0)  # a different body changes nothing
    assert first == second
    clock.advance(1200)
    assert chain.status(first).amount_in == Decimal("1.000000000")
    assert chain.pool_state(POOL)["reserve_a"] == 101 * LAMPORTS
    with engine_for(chain_url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sim_transactions)).scalar() == 1


def test_two_threads_sending_the_same_id_at_once_make_one_transaction(make_chain, chain_url):
    chains = [make_chain(), make_chain()]  # as two processes would
    barrier = threading.Barrier(2)
    signatures = []

    def send(chain):
        barrier.wait()
        signatures.append(chain.send("tx-race", POOL, "cpmm", True, LAMPORTS, 0))

    threads = [threading.Thread(target=send, args=(c,)) for c in chains]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(signatures)) == 1 and len(signatures) == 2
    with engine_for(chain_url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sim_transactions)).scalar() == 1


def test_a_transaction_drawn_to_fail_fails_and_leaves_the_pool_alone(make_chain, clock):
    chain = make_chain(fail_rate=1.0)
    signature = chain.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    clock.advance(1200)
    status = chain.status(signature)
    assert status.state is TxState.FAILED
    assert status.error_code == "TX_FAILED"
    assert status.amount_out is None
    assert chain.pool_state(POOL) == pool_state()


def test_a_swap_paying_less_than_its_floor_at_landing_fails_with_slippage(make_chain, clock):
    chain = make_chain(rng=ScriptedRandom([0.8, 1.2]))
    quoted_out = cpmm.swap(chain.pool_state(POOL), True, 10 * LAMPORTS)[0]
    first = chain.send("tx-first", POOL, "cpmm", True, 10 * LAMPORTS, 0)           # lands at 800 ms
    second = chain.send("tx-second", POOL, "cpmm", True, 10 * LAMPORTS, quoted_out)  # lands at 1200 ms
    clock.advance(1200)
    assert chain.status(second).state is TxState.FAILED
    assert chain.status(second).error_code == "SLIPPAGE_EXCEEDED"
    assert chain.status(first).state is TxState.CONFIRMED
    assert chain.pool_state(POOL)["reserve_a"] == 110 * LAMPORTS


def test_transactions_land_in_confirm_order_not_send_order(make_chain, clock):
    chain = make_chain(rng=ScriptedRandom([1.2, 0.8]))
    quoted_out = cpmm.swap(chain.pool_state(POOL), True, 10 * LAMPORTS)[0]
    sent_first = chain.send("tx-a", POOL, "cpmm", True, 10 * LAMPORTS, quoted_out)  # lands at 1200 ms
    sent_second = chain.send("tx-b", POOL, "cpmm", True, 10 * LAMPORTS, quoted_out)  # lands at 800 ms
    clock.advance(1200)
    assert chain.status(sent_first).error_code == "SLIPPAGE_EXCEEDED"
    assert chain.status(sent_second).state is TxState.CONFIRMED


def test_a_landed_transaction_never_changes(make_chain, clock):
    chain = make_chain()
    signature = chain.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    clock.advance(1200)
    landed = chain.status(signature)
    chain.send("tx-2", POOL, "cpmm", True, 50 * LAMPORTS, 0)
    clock.advance(5000)
    assert chain.status(signature) == landed
    assert chain.lookup("tx-1") == landed


def test_lookup_of_an_id_never_sent_is_unknown(make_chain):
    chain = make_chain()
    assert chain.lookup("never-sent").state is TxState.UNKNOWN
    assert chain.status(signature_for("never-sent")).state is TxState.UNKNOWN


def test_lookup_finds_what_was_sent_under_the_id(make_chain):
    chain = make_chain()
    signature = chain.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    status = chain.lookup("tx-1")
    assert (status.state, status.signature) == (TxState.PENDING, signature)


def test_another_process_sees_the_same_chain(make_chain, clock):
    sender, observer = make_chain(), make_chain()
    signature = sender.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    clock.advance(1200)
    assert observer.status(signature).state is TxState.CONFIRMED
    assert sender.status(signature) == observer.status(signature)


def test_ensure_pool_leaves_an_existing_pool_as_it_is(make_chain, clock):
    chain = make_chain()
    chain.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    clock.advance(1200)
    chain.land_due()
    moved = chain.pool_state(POOL)
    chain.ensure_pool(POOL, "cpmm", pool_state())
    assert chain.pool_state(POOL) == moved


def test_sending_to_a_pool_that_does_not_exist_is_refused(make_chain):
    chain = make_chain()
    with pytest.raises(UnknownPool):
        chain.send("tx-1", "NoSuchPool", "cpmm", True, LAMPORTS, 0)
    with pytest.raises(UnknownPool):
        chain.send("tx-2", POOL, "dlmm", True, LAMPORTS, 0)
