"""The plugin's own tests of its math, as its authors would keep them."""
from decimal import Decimal

import pytest

from orderengine_stableswap import curve

POOL = curve.new_pool(20_000_000 * 10**6, 20_000_000 * 10**6, 200, 150)


def test_a_balanced_pool_pays_one_for_one_less_the_fee():
    out, fee, _ = curve.swap(POOL, True, 1000 * 10**6)
    assert fee == 150_000
    assert 999_84 * 10**4 <= out <= 999_85 * 10**4


@pytest.mark.parametrize("size", [10, 10_000, 1_000_000, 5_000_000])
def test_a_round_trip_never_makes_money(size):
    out, _, after = curve.swap(POOL, True, size * 10**6)
    back, _, _ = curve.swap(after, False, out)
    assert back < size * 10**6


def test_size_costs_little_near_balance_and_more_far_from_it():
    small = curve.swap(POOL, True, 10**6)[0] / 10**6
    large = curve.swap(POOL, True, 15_000_000 * 10**6)[0] / (15_000_000 * 10**6)
    assert small > 0.9998 and large < small


def test_the_mid_price_of_a_balanced_pool_is_one():
    assert abs(curve.mid_price(POOL) - 1) < Decimal("0.000001")
