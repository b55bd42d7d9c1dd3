"""Raydium CPMM arithmetic: hand-computed cases and the properties a pool must keep."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given, strategies as st

from orderengine.errors import InsufficientLiquidity
from venues import cpmm


def test_swap_matches_the_hand_computed_constant_product():
    # fee = ceil(1001 × 2500 / 1e6) = ceil(2.5025) = 3; net = 998
    # out = floor(1_000_000 × 998 / (1_000_000 + 998)) = floor(997.00499) = 997
    state = cpmm.new_pool(1_000_000, 1_000_000, 2500)
    out, fee, new_state = cpmm.swap(state, True, 1001)
    assert (out, fee) == (997, 3)
    assert new_state["reserve_a"] == 1_001_001  # the whole input, fee included, stays in the pool
    assert new_state["reserve_b"] == 999_003


def test_one_sol_into_a_small_sol_usdc_pool():
    # 100 SOL / 15,000 USDC; 1 SOL in: fee = 2_500_000 lamports, net 997_500_000
    # out = floor(15e9 × 9.975e8 / (1e11 + 9.975e8)) = floor(148_147_231.367) = 148_147_231
    state = cpmm.new_pool(100 * 10**9, 15_000 * 10**6, 2500)
    out, fee, _ = cpmm.swap(state, True, 10**9)
    assert (out, fee) == (148_147_231, 2_500_000)


def test_swap_b_to_a_uses_the_reserves_the_other_way_round():
    state = cpmm.new_pool(1_000_000, 1_000_000, 2500)
    out, fee, new_state = cpmm.swap(state, False, 1001)
    assert (out, fee) == (997, 3)
    assert (new_state["reserve_a"], new_state["reserve_b"]) == (999_003, 1_001_001)


@pytest.mark.parametrize("amount_in, expected_fee", [(400, 1), (401, 2), (800, 2), (1, 1), (399_999, 1000)])
def test_trade_fee_rounds_up_in_the_pools_favour(amount_in, expected_fee):
    assert cpmm.trade_fee(amount_in, 2500) == expected_fee


def test_a_swap_that_would_pay_nothing_is_rejected():
    state = cpmm.new_pool(1_000_000, 1_000_000, 2500)
    with pytest.raises(InsufficientLiquidity):
        cpmm.swap(state, True, 1)  # the fee takes the whole unit


def test_swap_leaves_the_state_it_was_given_untouched():
    state = cpmm.new_pool(1_000_000, 1_000_000, 2500)
    before = dict(state)
    cpmm.swap(state, True, 5000)
    assert state == before


def test_quote_reports_mid_price_and_impact_net_of_fee():
    state = cpmm.new_pool(150_000 * 10**9, 22_500_000 * 10**6, 2500)
    small = cpmm.quote(state, True, 10**9)
    large = cpmm.quote(state, True, 5000 * 10**9)
    assert small.mid_price == Decimal("0.15")  # USDC base units per lamport
    assert small.price_impact_pct < Decimal("0.001")
    assert Decimal(3) < large.price_impact_pct < Decimal(4)


def test_fee_pct_is_the_rate_in_percent():
    assert cpmm.fee_pct(cpmm.new_pool(1, 1, 2500)) == Decimal("0.25")


# --- properties --------------------------------------------------------------------

reserves = st.integers(min_value=10**3, max_value=10**18)
amounts = st.integers(min_value=1, max_value=10**18)
fee_rates = st.integers(min_value=0, max_value=100_000)


def _swap_or_none(state, a_to_b, amount_in):
    try:
        return cpmm.swap(state, a_to_b, amount_in)
    except InsufficientLiquidity:
        return None


@given(reserves, reserves, amounts, fee_rates, st.booleans())
def test_output_never_reaches_the_reserve_and_fee_is_never_negative(ra, rb, amount, rate, a_to_b):
    result = _swap_or_none(cpmm.new_pool(ra, rb, rate), a_to_b, amount)
    assume(result is not None)
    out, fee, new_state = result
    assert 0 < out < (rb if a_to_b else ra)
    assert 0 <= fee <= amount
    assert new_state["reserve_a"] > 0 and new_state["reserve_b"] > 0


@given(reserves, reserves, fee_rates)
def test_the_product_of_reserves_never_falls(ra, rb, rate):
    state = cpmm.new_pool(ra, rb, rate)
    result = _swap_or_none(state, True, ra // 3 + 1)
    assume(result is not None)
    _, _, new_state = result
    assert new_state["reserve_a"] * new_state["reserve_b"] >= ra * rb


@given(reserves, reserves, amounts, amounts, fee_rates)
def test_a_larger_input_never_gets_a_better_price(ra, rb, x1, x2, rate):
    small, large = sorted((x1, x2))
    assume(small < large)
    state = cpmm.new_pool(ra, rb, rate)
    first, second = _swap_or_none(state, True, small), _swap_or_none(state, True, large)
    assume(first is not None and second is not None)
    # exact arithmetic would give out/in non-increasing; integer rounding (the fee's
    # ceiling and the output's floor) can cost the smaller trade at most 1 + mid units
    slack = 1 + -(-rb // ra)
    assert second[0] * small <= (first[0] + slack) * large


@given(reserves, reserves, amounts, fee_rates, st.booleans())
def test_a_round_trip_never_makes_money(ra, rb, amount, rate, a_to_b):
    there = _swap_or_none(cpmm.new_pool(ra, rb, rate), a_to_b, amount)
    assume(there is not None)
    out, _, state = there
    back = _swap_or_none(state, not a_to_b, out)
    assume(back is not None)
    assert back[0] <= amount
