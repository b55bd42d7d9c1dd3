"""The simulated chain: idempotent sends, lazy landing in confirm order, final outcomes, batches."""
from __future__ import annotations

import random
from datetime import timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command

from orderengine.migrate import alembic_config, upgrade
from orderengine.venue import TxState
from venues import cpmm
from tests.fakes import FakeClock
from venues.chain import (
    ChainNotMigrated, Send, SimChain, UnknownPool, b58encode, engine_for, normalize_url,
    sim_market, sim_transactions, signature_for,
)
from venues.chain import metadata as chain_metadata

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


def test_two_processes_sending_the_same_id_one_after_the_other_make_one_transaction(make_chain, chain_url):
    # On SQLite sends cannot overlap (a writer takes the lock up front); the real race, two
    # INSERTs of one id at the same moment, is tests/integration/test_send_races_on_postgres.py
    first, second = make_chain(), make_chain()  # as two processes would hold the chain
    signatures = [first.send("tx-race", POOL, "cpmm", True, LAMPORTS, 0),
                  second.send("tx-race", POOL, "cpmm", True, LAMPORTS, 0)]
    assert signatures[0] == signatures[1]
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


# --- batches ---------------------------------------------------------------------------

OTHER_POOL = "TestPoolSoLUsdt1111111111111111111111111111"


@pytest.fixture
def statements(chain_url):
    """Every SQL statement the chain sends from now on, as (text, executemany)."""
    seen: list[tuple[str, bool]] = []
    engine = engine_for(chain_url)

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, executemany))

    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


def writes(statements) -> list[str]:
    return [s for s, _ in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE"))]


def sends(*ids: str, pool: str = POOL, amount: int = LAMPORTS, min_out: int = 0) -> list[Send]:
    return [Send(i, pool, "cpmm", True, amount, min_out) for i in ids]


def test_send_many_answers_each_send_in_order_with_its_own_error(make_chain):
    chain = make_chain()
    answers = chain.send_many([*sends("tx-1"), *sends("tx-2", pool="NoSuchPool"),
                               *sends("tx-3", amount=0), *sends("tx-4")])
    assert answers[0] == signature_for("tx-1") and answers[3] == signature_for("tx-4")
    assert isinstance(answers[1], UnknownPool)
    assert isinstance(answers[2], ValueError)
    assert chain.lookup("tx-2").state is TxState.UNKNOWN
    assert chain.lookup("tx-3").state is TxState.UNKNOWN


def test_send_many_is_one_insert_statement_and_reads_no_pool_row(make_chain, statements):
    chain = make_chain()
    chain.pools()  # the pool states are in memory from here on
    statements.clear()
    chain.send_many(sends(*(f"tx-{n}" for n in range(50))))
    assert [s for s, _ in statements if "sim_pools" in s] == []
    assert [s.split()[0].upper() for s in writes(statements)] == ["BEGIN", "INSERT"]


def test_send_many_twice_with_the_same_ids_fills_once(make_chain, clock, chain_url):
    chain = make_chain()
    first = chain.send_many(sends("tx-1", "tx-2", "tx-1"))  # an id twice in one batch, too
    second = chain.send_many(sends("tx-1", "tx-2", amount=5 * LAMPORTS))
    assert first == [signature_for("tx-1"), signature_for("tx-2"), signature_for("tx-1")]
    assert second == first[:2]
    clock.advance(1200)
    assert [s.amount_in for s in chain.statuses(second)] == [Decimal("1.000000000")] * 2
    assert chain.pool_state(POOL)["reserve_a"] == 102 * LAMPORTS
    with engine_for(chain_url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sim_transactions)).scalar() == 2


def test_statuses_answer_pending_confirmed_failed_and_unknown_in_order(make_chain, clock):
    chain = make_chain(rng=ScriptedRandom([0.8, 0.9, 1.2]))
    quoted_out = cpmm.swap(chain.pool_state(POOL), True, 10 * LAMPORTS)[0]
    filled, late, pending = chain.send_many([
        *sends("tx-filled", amount=10 * LAMPORTS),                     # lands at 800 ms
        *sends("tx-late", amount=10 * LAMPORTS, min_out=quoted_out),   # 900 ms
        *sends("tx-pending")])                                         # 1200 ms
    clock.advance(1000)
    answers = chain.statuses([pending, signature_for("never-sent"), late, filled])
    assert [a.state for a in answers] == [TxState.PENDING, TxState.UNKNOWN, TxState.FAILED, TxState.CONFIRMED]
    assert [a.signature for a in answers] == [pending, signature_for("never-sent"), late, filled]
    assert answers[2].error_code == "SLIPPAGE_EXCEEDED"
    assert answers[3] == chain.status(filled)


def test_lookups_answer_by_client_id_in_order(make_chain, clock):
    chain = make_chain()
    chain.send_many(sends("tx-1", "tx-2"))
    clock.advance(1200)
    answers = chain.lookups(["tx-2", "never-sent", "tx-1"])
    assert [a.state for a in answers] == [TxState.CONFIRMED, TxState.UNKNOWN, TxState.CONFIRMED]
    assert [a.signature for a in answers] == [signature_for("tx-2"), None, signature_for("tx-1")]


def test_a_poll_that_finds_nothing_due_writes_nothing(make_chain, clock, statements):
    chain = make_chain()
    signatures = chain.send_many(sends("tx-1", "tx-2"))
    clock.advance(500)
    statements.clear()
    assert {s.state for s in chain.statuses([*signatures, signature_for("never-sent")])} == {
        TxState.PENDING, TxState.UNKNOWN}
    chain.lookups(["tx-1", "tx-2"])
    assert writes(statements) == []
    assert len([s for s, _ in statements if s.startswith("SELECT")]) == 2  # one read per poll


def test_due_transactions_of_several_pools_land_in_one_write_transaction(make_chain, clock, statements):
    chain = make_chain()
    chain.ensure_pool(OTHER_POOL, "cpmm", pool_state())
    signatures = chain.send_many([*sends("tx-1", "tx-2"), *sends("tx-3", pool=OTHER_POOL)])
    clock.advance(1200)
    statements.clear()
    assert {s.state for s in chain.statuses(signatures)} == {TxState.CONFIRMED}
    assert [s.split()[0].upper() + " " + s.split()[1] for s in writes(statements)] == [
        "BEGIN IMMEDIATE", "UPDATE sim_transactions", "UPDATE sim_pools", "UPDATE sim_pools"]
    assert [many for s, many in statements if s.startswith("UPDATE sim_transactions")] == [True]
    assert chain.pool_state(POOL)["reserve_a"] == 102 * LAMPORTS
    assert chain.pool_state(OTHER_POOL)["reserve_a"] == 101 * LAMPORTS


def test_maintain_lands_what_is_due_though_nobody_polls(make_chain, clock, chain_url):
    sender = make_chain()
    sender.send_many(sends("tx-1"))
    clock.advance(1200)
    make_chain().maintain()  # another process's background thread
    with engine_for(chain_url).connect() as conn:
        assert conn.execute(sa.select(sim_transactions.c.status)).scalar() == "confirmed"
    assert make_chain().pool_state(POOL)["reserve_a"] == 101 * LAMPORTS


def test_pool_states_are_read_again_once_older_than_the_limit(make_chain, clock):
    holder = make_chain(state_max_age_ms=60_000)
    fresh = make_chain(state_max_age_ms=0)
    before = holder.pool_state(POOL)
    fresh.send("tx-1", POOL, "cpmm", True, LAMPORTS, 0)
    clock.advance(1200)
    fresh.land_due()
    assert holder.pool_state(POOL) == before  # held in memory: a quote on it may fail at landing
    assert holder.pools(max_age_ms=0)[POOL].state["reserve_a"] == 101 * LAMPORTS


def test_a_chain_without_its_tables_says_to_migrate(tmp_path):
    with pytest.raises(ChainNotMigrated, match="orderengine migrate"):
        SimChain(f"sqlite:///{tmp_path}/bare.db")


def test_the_migrations_create_every_column_the_chain_reads(chain_url):
    inspector = sa.inspect(engine_for(chain_url))
    for table in chain_metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys()), table.name


def test_chain_tables_the_chain_created_itself_get_the_market_lease(sqlite_url):
    command.upgrade(alembic_config(sqlite_url), "0001")
    with engine_for(sqlite_url).begin() as conn:  # as the chain used to create them at start-up
        conn.exec_driver_sql("CREATE TABLE sim_market (id INTEGER PRIMARY KEY, tick BIGINT NOT NULL, "
                             "anchors TEXT NOT NULL)")
        conn.exec_driver_sql("INSERT INTO sim_market VALUES (1, 42, '{}')")
    upgrade(sqlite_url)
    with engine_for(sqlite_url).connect() as conn:
        assert conn.execute(sa.select(sim_market)).one()._asdict() == {
            "id": 1, "tick": 42, "anchors": "{}", "holder": None, "lease_until": None}
