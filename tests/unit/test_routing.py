from decimal import Decimal

import pytest

from orderengine.errors import InsufficientLiquidity, NoRoute, VenueUnavailable
from orderengine.routing import QuoteFetcher, decide, min_amount_out, plan_steps
from orderengine.tokens import SOL, USDC, USDT
from tests.fakes import FakeVenue


@pytest.fixture
def fetch():
    fetchers = []

    def run(*venues, timeout=1.0, token_in=SOL, token_out=USDC, amount="1"):
        fetcher = QuoteFetcher({v.name: v for v in venues}, timeout_s=timeout, io_threads=8)
        fetchers.append(fetcher)
        return fetcher.fetch_now(token_in, token_out, Decimal(amount))

    yield run
    for f in fetchers:
        f.close()


def test_the_venue_paying_the_most_after_fees_wins(fetch):
    outcomes = fetch(FakeVenue("cheap", price="150", fee_pct="1"), FakeVenue("dear", price="149.5", fee_pct="0.1"))
    decision = decide(outcomes, SOL, USDC, Decimal("1"), 50)
    assert decision["venue"] == "dear"  # 149.35 beats 148.5
    assert decision["expectedOut"] == "149.3505"
    assert {q["venue"] for q in decision["quotes"]} == {"cheap", "dear"}


def test_every_quote_carries_the_fields_users_compare(fetch):
    decision = decide(fetch(FakeVenue("a")), SOL, USDC, Decimal("1"), 50)
    assert set(decision["quotes"][0]) >= {"venue", "amountOut", "fee", "netOut", "price", "priceImpactPct"}


def test_a_venue_that_times_out_is_left_out_and_the_decision_says_why(fetch):
    outcomes = fetch(FakeVenue("slow", quote_delay=0.5), FakeVenue("fast"), timeout=0.1)
    decision = decide(outcomes, SOL, USDC, Decimal("1"), 50)
    assert decision["venue"] == "fast"
    slow = next(q for q in decision["quotes"] if q["venue"] == "slow")
    assert slow["error"]["code"] == "VENUE_TIMEOUT"


def test_a_venue_that_errors_is_left_out_and_the_decision_says_why(fetch):
    outcomes = fetch(FakeVenue("broken", quote_error=RuntimeError("boom")), FakeVenue("ok"))
    decision = decide(outcomes, SOL, USDC, Decimal("1"), 50)
    broken = next(q for q in decision["quotes"] if q["venue"] == "broken")
    assert decision["venue"] == "ok"
    assert broken["error"] == {"code": "VENUE_ERROR", "message": "RuntimeError: boom"}


def test_no_usable_quote_is_a_retryable_no_route(fetch):
    outcomes = fetch(FakeVenue("a", quote_error=VenueUnavailable("down")))
    with pytest.raises(NoRoute) as err:
        decide(outcomes, SOL, USDC, Decimal("1"), 50)
    assert err.value.retryable and "a: VENUE_UNAVAILABLE" in err.value.message


def test_an_order_too_big_for_every_venue_is_not_retried(fetch):
    outcomes = fetch(FakeVenue("a", max_in="10"), FakeVenue("b", max_in="10"), amount="11")
    with pytest.raises(InsufficientLiquidity) as err:
        decide(outcomes, SOL, USDC, Decimal("11"), 50)
    assert not err.value.retryable


@pytest.mark.parametrize("expected,bps,floor", [
    ("150", 50, "149.25"), ("150", 0, "150"), ("150", 10000, "0"), ("1.0000019", 100, "0.990001"),
])
def test_min_amount_out_is_expected_out_less_slippage_rounded_down(expected, bps, floor):
    assert min_amount_out(Decimal(expected), bps, USDC) == Decimal(floor)


def test_native_sol_in_is_wrapped_before_the_swap():
    steps = plan_steps(SOL, USDC, "v", "p", Decimal("1"), Decimal("149"))
    assert [s["step"] for s in steps] == ["wrapSol", "swap"]


def test_native_sol_out_is_unwrapped_after_the_swap():
    steps = plan_steps(USDC, SOL, "v", "p", Decimal("150"), Decimal("0.9"))
    assert [s["step"] for s in steps] == ["swap", "unwrapSol"]


def test_a_pair_without_sol_is_a_single_swap():
    assert [s["step"] for s in plan_steps(USDC, USDT, "v", "p", Decimal("1"), Decimal("0.99"))] == ["swap"]


def test_the_route_changes_with_size_when_a_cheap_shallow_pool_meets_a_dear_deep_one(fetch):
    """Real CPMM pools: low fee but little depth wins small orders, high fee but deep wins large."""
    from orderengine.routing import QuoteOutcome
    from orderengine.venue import Quote
    from venues import cpmm

    pools = {"shallow": cpmm.new_pool(1_000 * 10**9, 150_000 * 10**6, 500),      # 0.05 %
             "deep": cpmm.new_pool(1_000_000 * 10**9, 150_000_000 * 10**6, 3000)}  # 0.30 %

    def route(amount: str) -> str:
        outcomes = []
        for name, state in pools.items():
            q = cpmm.quote(state, True, SOL.to_base(Decimal(amount)))
            out = USDC.from_base(q.amount_out)
            outcomes.append(QuoteOutcome(name, Quote(name, name, SOL, USDC, Decimal(amount), out,
                                                     SOL.from_base(q.fee), SOL, out / Decimal(amount),
                                                     q.price_impact_pct)))
        return decide(outcomes, SOL, USDC, Decimal(amount), 50)["venue"]

    assert route("1") == "shallow"
    assert route("100") == "deep"


def test_a_hung_venue_does_not_starve_the_quotes_of_the_others(fetch):
    hung, healthy = FakeVenue("hung", quote_delay=3), FakeVenue("healthy")
    fetcher = QuoteFetcher({"hung": hung, "healthy": healthy}, timeout_s=0.2, io_threads=2)
    try:
        for _ in range(4):  # more fetches than the hung venue has threads
            outcomes = {o.venue: o for o in fetcher.fetch_now(SOL, USDC, Decimal("1"))}
            assert outcomes["hung"].error_code == "VENUE_TIMEOUT"
            assert outcomes["healthy"].quote is not None
    finally:
        fetcher.close()
