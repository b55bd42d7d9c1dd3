"""The venue contract's batch methods, on every installed venue (the built-in ones and
any plugin installed beside them, e.g. examples/venue-plugin): each answers exactly
what its one-at-a-time method does, in order, with errors per item."""
from __future__ import annotations

import inspect
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import sqlalchemy as sa

from orderengine.errors import NoRoute
from orderengine.tokens import SOL, USDC, Token, by_symbol
from orderengine.venue import (
    ENTRY_POINT_GROUP, QuoteRequest, SwapRequest, TxState, Venue, VenueEnvironment,
)
from tests.fakes import FakeClock
from venues import simvenue
from venues.chain import SimChain, engine_for, signature_for, sim_pools, sim_transactions
from venues.market import MarketParams
from venues.meteora import Meteora
from venues.raydium import Raydium

BONK = Token("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5)
INSTALLED = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


@pytest.fixture(params=INSTALLED)
def venue(request, chain_url) -> Venue:
    """An installed venue as the engine builds it; transactions land as soon as asked for."""
    (entry_point,) = entry_points(group=ENTRY_POINT_GROUP, name=request.param)
    env = VenueEnvironment(chain_url=chain_url, quote_latency_ms=0, exec_latency_ms=0)
    return entry_point.load()(env)


def first_pair(venue: Venue) -> tuple[Token, Token]:
    pool = venue.pools()[0]
    return by_symbol(pool.token_a), by_symbol(pool.token_b)


def one_at_a_time(method, *args):
    try:
        return method(*args)
    except Exception as error:  # what the batch method must answer in its place
        return error


def same(answer, expected) -> bool:
    if isinstance(expected, Exception):
        return type(answer) is type(expected) and str(answer) == str(expected)
    return answer == expected


def test_quotes_answer_what_quote_does_for_each_request(venue):
    a, b = first_pair(venue)
    requests = [QuoteRequest(a, b, Decimal(1)), QuoteRequest(SOL if a != SOL else USDC, BONK, Decimal(1)),
                QuoteRequest(a, b, a.quantum),  # pays nothing: insufficient liquidity
                QuoteRequest(b, a, Decimal(100)), QuoteRequest(a, b, Decimal(50))]
    answers = venue.quotes(requests)
    expected = [one_at_a_time(venue.quote, r.token_in, r.token_out, r.amount_in) for r in requests]
    assert len(answers) == len(requests)
    assert all(same(x, y) for x, y in zip(answers, expected)), (answers, expected)
    assert isinstance(answers[1], NoRoute)


def test_execute_many_answers_what_execute_does_for_each_send(venue):
    a, b = first_pair(venue)
    quote = venue.quote(a, b, Decimal(1))
    good = SwapRequest(quote.pool_id, a, b, Decimal(1), Decimal(0))
    no_pool = SwapRequest(quote.pool_id, a, BONK, Decimal(1), Decimal(0))
    sends = [(good, "batch-1"), (no_pool, "batch-2"), (good, "batch-3"), (good, "batch-1")]
    answers = venue.execute_many(sends)
    expected = [one_at_a_time(venue.execute, swap, tx_id) for swap, tx_id in sends]  # re-sends
    assert all(same(x, y) for x, y in zip(answers, expected)), (answers, expected)
    assert answers[0] == answers[3] != answers[2]
    assert isinstance(answers[1], NoRoute)


def test_execute_many_twice_with_the_same_ids_fills_once(venue, chain_url):
    a, b = first_pair(venue)
    quote = venue.quote(a, b, Decimal(1))
    sends = [(SwapRequest(quote.pool_id, a, b, Decimal(1), Decimal(0)), f"twice-{n}") for n in range(3)]
    assert venue.execute_many(sends) == venue.execute_many(sends)
    assert {s.state for s in venue.lookups([tx_id for _, tx_id in sends])} == {TxState.CONFIRMED}
    with engine_for(chain_url).connect() as conn:
        sent = conn.execute(sa.select(sa.func.count()).select_from(sim_transactions)
                            .where(sim_transactions.c.client_tx_id.like("%twice-%"))).scalar()
    assert sent == 3


def test_statuses_and_lookups_answer_what_status_and_lookup_do(venue):
    a, b = first_pair(venue)
    quote = venue.quote(a, b, Decimal(1))
    floor_too_high = quote.amount_out * 2
    sends = [(SwapRequest(quote.pool_id, a, b, Decimal(1), Decimal(0)), "poll-1"),
             (SwapRequest(quote.pool_id, a, b, Decimal(1), floor_too_high), "poll-2")]
    signatures = [*venue.execute_many(sends), signature_for("never-sent")]
    answers = venue.statuses(signatures)
    assert answers == [venue.status(s) for s in signatures]
    assert [s.state for s in answers] == [TxState.CONFIRMED, TxState.FAILED, TxState.UNKNOWN]
    ids = ["poll-2", "never-sent", "poll-1"]
    assert venue.lookups(ids) == [venue.lookup(i) for i in ids]
    assert venue.lookups([]) == [] and venue.statuses([]) == []


# --- the simulated venues --------------------------------------------------------------

@pytest.mark.parametrize("venue_class", [Raydium, Meteora])
def test_quotes_wait_one_round_trip_per_call_not_per_request(venue_class, chain_url, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(simvenue.time, "sleep", slept.append)
    venue = venue_class(VenueEnvironment(chain_url=chain_url, quote_latency_ms=200))
    venue.quotes([QuoteRequest(SOL, USDC, Decimal(n)) for n in range(1, 51)])
    assert slept == [0.2]
    venue.quotes([QuoteRequest(SOL, BONK, Decimal(1))])  # nothing to ask the network
    assert slept == [0.2]


def test_maintain_on_both_venues_of_one_chain_plays_each_tick_once(chain_url):
    clock = FakeClock()
    chain = SimChain(chain_url, exec_latency_ms=0, clock=clock, market=MarketParams())
    env = VenueEnvironment(chain_url=chain_url, quote_latency_ms=0)
    both = [Raydium(env, chain=chain), Meteora(env, chain=chain)]
    for venue in both:
        venue.pools()
        venue.maintain()  # the first starts the market
    clock.advance(3000)
    for venue in both:
        venue.maintain()
    with engine_for(chain_url).connect() as conn:
        versions = conn.execute(sa.select(sim_pools.c.version)).scalars().all()
    assert versions == [2] * 6  # seeded, then three ticks in one go


def test_every_method_of_the_contract_is_documented_with_its_signature():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "venues.md").read_text()
    methods = [name for name, member in vars(Venue).items()
               if callable(member) and not name.startswith("_")]
    assert {"quotes", "execute_many", "statuses", "lookups", "maintain"} <= set(methods)
    for name in methods:
        params = ", ".join(str(p).replace("'", "") for p in inspect.signature(getattr(Venue, name)).parameters.values())
        returns = inspect.signature(getattr(Venue, name)).return_annotation
        assert f"def {name}({params}) -> {returns}: ..." in guide, name


def test_every_attribute_of_the_contract_is_documented():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "venues.md").read_text()
    attributes = [name for name, member in vars(Venue).items()
                  if not callable(member) and not name.startswith("_") and not isinstance(member, property)]
    assert {"name", "capabilities", "confirmation_hint_ms", "validity_window_s", "max_batch"} <= set(attributes)
    for name in attributes:
        assert f"    {name}: " in guide, name
