"""Meteora DLMM arithmetic: bins walked by hand, and the properties a pool must keep."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given, strategies as st

from orderengine.errors import InsufficientLiquidity
from venues import dlmm


def make_pool(bins, *, active=0, bin_step=100, base_factor=0, variable_fee_control=0,
              volatility_accumulator=0):
    """A pool built bin by bin: {bin id: (amount of A, amount of B)}."""
    return {
        "bin_step": bin_step, "base_factor": base_factor,
        "variable_fee_control": variable_fee_control,
        "max_volatility_accumulator": 350_000, "decay_factor": 5000,
        "active_id": active, "index_reference": active,
        "volatility_accumulator": volatility_accumulator, "volatility_reference": 0,
        "bins": {str(i): list(amounts) for i, amounts in bins.items()},
        "fees_a": 0, "fees_b": 0,
    }


def test_bin_prices_compound_by_the_bin_step():
    assert dlmm.bin_price(100, 0) == 1
    assert dlmm.bin_price(100, 2) == Decimal("1.0201")
    assert dlmm.bin_price(100, -1) * Decimal("1.01") == pytest.approx(Decimal(1))


def test_a_swap_crossing_three_bins_trades_each_at_its_own_price():
    # bin_step 1 %, no fee. Selling A walks down: bin 0 at price 1 gives its 1000 B for
    # 1000 A; bin -1 at 1/1.01 gives 1000 B for ceil(1000 × 1.01) = 1010 A; bin -2 at
    # 1/1.0201 pays floor(500 / 1.0201) = floor(490.148) = 490 B for the last 500 A.
    pool = make_pool({1: (1000, 0), 0: (0, 1000), -1: (0, 1000), -2: (0, 1000), -3: (0, 1000)})
    out, fee, new_state = dlmm.swap(pool, True, 2510)
    assert (out, fee) == (2490, 0)
    assert new_state["active_id"] == -2
    assert new_state["bins"]["0"] == [1000, 0]
    assert new_state["bins"]["-1"] == [1010, 0]
    assert new_state["bins"]["-2"] == [500, 510]
    assert new_state["bins"]["-3"] == [0, 1000]


def test_a_swap_that_empties_a_bin_sends_the_next_one_to_the_next_bin():
    pool = make_pool({0: (0, 1000), -1: (0, 1000)})
    out, _, emptied = dlmm.swap(pool, True, 1000)
    assert out == 1000 and emptied["bins"]["0"] == [1000, 0]
    out, _, after = dlmm.swap(emptied, True, 101)  # bin -1 at 1/1.01: floor(101 / 1.01) = 100
    assert out == 100
    assert after["active_id"] == -1
    assert after["bins"]["-1"] == [101, 900]


def test_buying_a_walks_up_through_bins_holding_a():
    pool = make_pool({0: (100, 0), 1: (100, 0), -1: (0, 100)})
    # bin 0 sells its 100 A for 100 B; bin 1 at 1.01 sells floor(50 / 1.01) = 49 A
    out, _, new_state = dlmm.swap(pool, False, 150)
    assert out == 149
    assert new_state["active_id"] == 1
    assert new_state["bins"]["1"] == [51, 50]


def test_the_fee_is_charged_on_the_input_and_rounded_up():
    # base fee = 10000 × 100 / 1e8 = 1 %; 1001 in: fee ceil(10.01) = 11, 990 traded at 1
    pool = make_pool({0: (0, 10**6)}, base_factor=10000)
    out, fee, new_state = dlmm.swap(pool, True, 1001)
    assert (out, fee) == (990, 11)
    assert new_state["fees_a"] == 11
    assert new_state["bins"]["0"] == [990, 10**6 - 990]  # the fee is not in the bin


def test_crossing_bins_raises_the_variable_fee():
    bins = {-i: (0, 1000) for i in range(40)}
    calm = dlmm.swap(make_pool(bins, base_factor=10000), True, 20_000)
    volatile = dlmm.swap(make_pool(bins, base_factor=10000, variable_fee_control=40_000), True, 20_000)
    assert volatile[1] > calm[1]
    assert volatile[2]["volatility_accumulator"] > 0


def test_volatility_decays_at_each_swap():
    pool = make_pool({0: (0, 10**9)}, volatility_accumulator=100_000)
    _, _, after = dlmm.swap(pool, True, 10)
    assert after["volatility_reference"] == 50_000
    assert after["volatility_accumulator"] == 50_000  # no bin crossed: only the decayed reference


def test_the_total_fee_rate_is_capped_at_ten_percent():
    pool = make_pool({}, bin_step=100, base_factor=10000, variable_fee_control=10**6)
    assert dlmm.fee_rate(pool, 350_000) == dlmm.MAX_FEE_RATE


def test_running_out_of_bins_is_insufficient_liquidity():
    pool = make_pool({0: (0, 1000), -1: (0, 1000)})
    with pytest.raises(InsufficientLiquidity):
        dlmm.swap(pool, True, 5000)


def test_new_pool_centres_the_active_bin_on_the_price():
    pool = dlmm.new_pool(Decimal("0.1503"), bin_step=10, base_factor=8000, variable_fee_control=40_000,
                         max_volatility_accumulator=350_000, bins_each_side=5, a_per_bin=100, b_per_bin=1500)
    price = dlmm.mid_price(pool)
    assert abs(price / Decimal("0.1503") - 1) < Decimal("0.0005")  # within half a bin step
    assert pool["bins"][str(pool["active_id"] + 1)] == [100, 0]
    assert pool["bins"][str(pool["active_id"] - 1)] == [0, 1500]


def test_quote_inside_the_active_bin_has_no_price_impact():
    pool = make_pool({0: (0, 10**9), -1: (0, 10**9)}, base_factor=10000)
    quote = dlmm.quote(pool, True, 10**6)
    assert quote.price_impact_pct == 0
    assert quote.fee == 10**4


# --- properties ----------------------------------------------------------------------

@st.composite
def pools(draw):
    bin_step = draw(st.sampled_from([1, 10, 25, 100]))
    per_bin = st.integers(min_value=1, max_value=10**12)
    below = draw(st.lists(per_bin, min_size=1, max_size=8))
    above = draw(st.lists(per_bin, min_size=1, max_size=8))
    active = draw(st.integers(min_value=-2000, max_value=2000))
    bins = {active - 1 - i: (0, b) for i, b in enumerate(below)}
    bins |= {active + 1 + i: (a, 0) for i, a in enumerate(above)}
    bins[active] = (draw(per_bin), draw(per_bin))
    return make_pool(bins, active=active, bin_step=bin_step,
                     base_factor=draw(st.integers(min_value=0, max_value=20_000)),
                     variable_fee_control=draw(st.sampled_from([0, 40_000, 400_000])),
                     volatility_accumulator=draw(st.integers(min_value=0, max_value=350_000)))


amounts = st.integers(min_value=1, max_value=10**13)


def _swap_or_none(state, a_to_b, amount_in):
    try:
        return dlmm.swap(state, a_to_b, amount_in)
    except InsufficientLiquidity:
        return None


@given(pools(), amounts, st.booleans())
def test_output_never_exceeds_the_reserves_and_fee_is_never_negative(pool, amount, a_to_b):
    result = _swap_or_none(pool, a_to_b, amount)
    assume(result is not None)
    out, fee, new_state = result
    held_a, held_b = dlmm.liquidity(pool)
    assert 0 < out <= (held_b if a_to_b else held_a)
    assert 0 <= fee <= amount
    assert all(a >= 0 and b >= 0 for a, b in new_state["bins"].values())


@given(pools(), amounts, amounts, st.booleans())
def test_a_larger_input_never_gets_a_better_price(pool, x1, x2, a_to_b):
    small, large = sorted((x1, x2))
    assume(small < large)
    first, second = _swap_or_none(pool, a_to_b, small), _swap_or_none(pool, a_to_b, large)
    assume(first is not None and second is not None)
    # exact arithmetic gives out/in non-increasing; in each bin the smaller trade
    # touched, rounding may cost it two input units (the ceilings of the fee and of the
    # input that empties the bin), worth a bin price each, and one output unit (the floor)
    bins_touched = abs(first[2]["active_id"] - pool["active_id"]) + 1
    price_ceiling = int(dlmm.marginal_price(pool, a_to_b)) + 1
    slack = bins_touched * (2 * price_ceiling + 1)
    assert second[0] * small <= (first[0] + slack) * large


@given(pools(), amounts, st.booleans())
def test_a_round_trip_never_makes_money(pool, amount, a_to_b):
    there = _swap_or_none(pool, a_to_b, amount)
    assume(there is not None)
    out, _, state = there
    back = _swap_or_none(state, not a_to_b, out)
    assume(back is not None)
    assert back[0] <= amount
