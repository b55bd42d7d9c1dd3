"""Raydium and Meteora on the simulated chain, driven through the venue contract."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from orderengine.errors import InsufficientLiquidity, NoRoute, VenueUnavailable
from orderengine.tokens import SOL, USDC, USDT, Token
from orderengine.venue import SwapRequest, TxState, Venue, VenueEnvironment
from venues import meteora, raydium
from tests.fakes import FakeClock
from venues.chain import SimChain

BONK = Token("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5)
VENUES = {"raydium": raydium, "meteora": meteora}
VENUE_CLASSES = {"raydium": raydium.Raydium, "meteora": meteora.Meteora}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def env(chain_url) -> VenueEnvironment:
    return VenueEnvironment(chain_url=chain_url, quote_latency_ms=0, exec_latency_ms=1000)


@pytest.fixture
def make_venue(env, clock):
    """A venue as its entry point builds it, but on a chain with a clock the test moves."""
    def make(name: str, fail_rate: float = 0.0) -> Venue:
        chain = SimChain(env.chain_url, exec_latency_ms=env.exec_latency_ms, fail_rate=fail_rate, clock=clock)
        return VENUE_CLASSES[name](env, chain=chain)
    return make


def swap_for(quote, min_amount_out=Decimal(0)) -> SwapRequest:
    return SwapRequest(quote.pool_id, quote.token_in, quote.token_out, quote.amount_in, min_amount_out)


@pytest.mark.parametrize("name", VENUES)
def test_the_factory_builds_a_venue_without_touching_the_chain(name):
    env = VenueEnvironment(chain_url="postgresql+psycopg://nobody@127.0.0.1:1/none", exec_latency_ms=1234)
    venue = VENUES[name].create(env)
    assert isinstance(venue, Venue)
    assert venue.name == name
    assert venue.confirmation_hint_ms == 1234


@pytest.mark.parametrize("name", VENUES)
def test_a_chain_that_does_not_answer_is_an_unavailable_venue(name):
    env = VenueEnvironment(chain_url="postgresql+psycopg://nobody@127.0.0.1:1/none", quote_latency_ms=0)
    with pytest.raises(VenueUnavailable):
        VENUES[name].create(env).quote(SOL, USDC, Decimal(1))


@pytest.mark.parametrize("name", VENUES)
def test_pools_lists_the_three_pairs_with_fees_and_prices(name, make_venue):
    pools = make_venue(name).pools()
    assert {(p.token_a, p.token_b) for p in pools} == {("SOL", "USDC"), ("SOL", "USDT"), ("USDC", "USDT")}
    sol_usdc = next(p for p in pools if (p.token_a, p.token_b) == ("SOL", "USDC"))
    assert Decimal(149) < sol_usdc.mid_price < Decimal(151)
    assert Decimal(0) < sol_usdc.fee_pct < Decimal(1)
    assert sol_usdc.liquidity["USDC"] > Decimal(1_000_000)


@pytest.mark.parametrize("name", VENUES)
def test_one_sol_barely_moves_the_price_and_five_thousand_moves_it_several_percent(name, make_venue):
    venue = make_venue(name)
    small = venue.quote(SOL, USDC, Decimal(1))
    large = venue.quote(SOL, USDC, Decimal(5000))
    assert small.price_impact_pct < Decimal("0.01")
    assert Decimal(2) < large.price_impact_pct < Decimal(6)
    assert Decimal(145) < small.price < Decimal(151)
    assert small.price == small.amount_out / small.amount_in
    assert small.fee_token == SOL and small.fee > 0
    assert large.price < small.price


@pytest.mark.parametrize("name", VENUES)
def test_quote_works_both_ways_round_a_pool(name, make_venue):
    venue = make_venue(name)
    quote = venue.quote(USDC, SOL, Decimal(150))
    assert Decimal("0.99") < quote.amount_out < Decimal("1.01")
    assert quote.fee_token == USDC


def test_each_venue_wins_some_trades(make_venue):
    ray, met = make_venue("raydium"), make_venue("meteora")

    def best(token_in, token_out, amount):
        quotes = [venue.quote(token_in, token_out, Decimal(amount)) for venue in (ray, met)]
        return max(quotes, key=lambda q: q.amount_out).venue

    assert best(SOL, USDC, 1) == "meteora"
    assert best(USDC, SOL, 150) == "raydium"
    assert best(SOL, USDT, 1) == "raydium"


@pytest.mark.parametrize("name", VENUES)
def test_a_pair_the_venue_has_no_pool_for_is_no_route(name, make_venue):
    with pytest.raises(NoRoute):
        make_venue(name).quote(SOL, BONK, Decimal(1))


def test_more_than_the_bins_hold_is_insufficient_liquidity(make_venue):
    with pytest.raises(InsufficientLiquidity):
        make_venue("meteora").quote(SOL, USDC, Decimal(1_000_000))


def test_quote_waits_for_the_simulated_round_trip(chain_url):
    env = VenueEnvironment(chain_url=chain_url, quote_latency_ms=50)
    venue = raydium.create(env)
    started = time.monotonic()
    venue.quote(SOL, USDC, Decimal(1))
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize("name", VENUES)
def test_executing_the_same_client_tx_id_twice_fills_once(name, make_venue, clock):
    venue = make_venue(name)
    quote = venue.quote(SOL, USDC, Decimal(10))
    before = venue.pools()
    first = venue.execute(swap_for(quote), "attempt-1")
    second = venue.execute(swap_for(quote), "attempt-1")
    assert first == second
    clock.advance(1200)
    status = venue.status(first)
    assert status.state is TxState.CONFIRMED
    assert status.amount_out == quote.amount_out
    assert status.fee == quote.fee
    moved = _sol_usdc(venue.pools()).liquidity["SOL"] - _sol_usdc(before).liquidity["SOL"]
    fee_kept_out_of_bins = quote.fee if name == "meteora" else 0
    assert moved == Decimal(10) - fee_kept_out_of_bins


@pytest.mark.parametrize("name", VENUES)
def test_two_workers_executing_one_client_tx_id_fill_once(name, make_venue, clock):
    # one after the other: on SQLite sends cannot overlap; the race at the same moment is
    # tests/integration/test_send_races_on_postgres.py
    venues = [make_venue(name), make_venue(name)]  # as two worker processes would hold them
    quote = venues[0].quote(SOL, USDC, Decimal(10))
    before = venues[0].pools()
    signatures = [v.execute(swap_for(quote), "attempt-race") for v in venues]
    assert signatures[0] == signatures[1]
    clock.advance(1200)
    assert venues[1].status(signatures[0]).state is TxState.CONFIRMED
    moved = _sol_usdc(venues[1].pools()).liquidity["USDC"] - _sol_usdc(before).liquidity["USDC"]
    assert moved == -quote.amount_out


@pytest.mark.parametrize("name", VENUES)
def test_a_failed_transaction_leaves_the_pool_unchanged(name, make_venue, clock):
    venue = make_venue(name, fail_rate=1.0)
    quote = venue.quote(SOL, USDC, Decimal(10))
    before = venue.pools()
    signature = venue.execute(swap_for(quote), "attempt-1")
    clock.advance(1200)
    status = venue.status(signature)
    assert (status.state, status.error_code) == (TxState.FAILED, "TX_FAILED")
    assert venue.pools() == before


@pytest.mark.parametrize("name", VENUES)
def test_a_swap_whose_floor_the_pool_no_longer_pays_fails_with_slippage(name, make_venue, clock):
    venue = make_venue(name)
    quote = venue.quote(SOL, USDC, Decimal(100))
    venue.execute(swap_for(quote), "someone-else")
    clock.advance(1200)  # the other fill lands first
    late = venue.execute(swap_for(quote, min_amount_out=quote.amount_out), "attempt-1")
    clock.advance(1200)
    status = venue.lookup("attempt-1")
    assert (status.signature, status.state, status.error_code) == (late, TxState.FAILED, "SLIPPAGE_EXCEEDED")


@pytest.mark.parametrize("name", VENUES)
def test_lookup_is_unknown_until_sent_then_pending_then_final(name, make_venue, clock):
    venue = make_venue(name)
    assert venue.lookup("attempt-1").state is TxState.UNKNOWN
    quote = venue.quote(USDT, SOL, Decimal(150))
    venue.execute(swap_for(quote), "attempt-1")
    assert venue.lookup("attempt-1").state is TxState.PENDING
    clock.advance(1200)
    assert venue.lookup("attempt-1").state is TxState.CONFIRMED


def test_the_same_client_tx_id_on_two_venues_is_two_transactions(make_venue):
    ray, met = make_venue("raydium"), make_venue("meteora")
    ray_sig = ray.execute(swap_for(ray.quote(SOL, USDC, Decimal(1))), "attempt-1")
    met_sig = met.execute(swap_for(met.quote(SOL, USDC, Decimal(1))), "attempt-1")
    assert ray_sig != met_sig
    assert met.lookup("attempt-1").signature == met_sig


def test_the_floor_is_rounded_up_to_the_tokens_precision(make_venue, clock):
    venue = make_venue("raydium")
    quote = venue.quote(SOL, USDC, Decimal(1))
    # a floor a hair above what the pool pays, below USDC's precision, still fails
    signature = venue.execute(swap_for(quote, quote.amount_out + Decimal("0.0000001")), "attempt-1")
    clock.advance(1200)
    assert venue.status(signature).error_code == "SLIPPAGE_EXCEEDED"


def test_execute_refuses_a_pool_of_another_venue(make_venue):
    ray, met = make_venue("raydium"), make_venue("meteora")
    quote = ray.quote(SOL, USDC, Decimal(1))
    with pytest.raises(NoRoute):
        met.execute(swap_for(quote), "attempt-1")


def _sol_usdc(pools):
    return next(p for p in pools if (p.token_a, p.token_b) == ("SOL", "USDC"))
