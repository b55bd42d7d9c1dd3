"""Meteora: DLMM (liquidity in price bins) pools on the simulated chain.

Each pool is seeded with the same liquidity in every bin for 30 % either side
of its price; the fee is lower than Raydium's, the variable fee grows on
trades that cross many bins.
"""
from __future__ import annotations

from decimal import Decimal

from orderengine.tokens import SOL, USDC, USDT
from orderengine.venue import Token, Venue, VenueEnvironment
from venues import dlmm
from venues.simvenue import PoolSeed, SimVenue


def _pool(a: Token, b: Token, price: str, a_per_bin: str, b_per_bin: str, *, bin_step: int,
          base_factor: int, variable_fee_control: int, bins_each_side: int,
          volatility: float = 1.0) -> PoolSeed:
    base_price = Decimal(price).scaleb(b.decimals - a.decimals)  # B base units per A base unit
    state = dlmm.new_pool(
        base_price, bin_step=bin_step, base_factor=base_factor,
        variable_fee_control=variable_fee_control, max_volatility_accumulator=350_000,
        bins_each_side=bins_each_side, a_per_bin=a.to_base(Decimal(a_per_bin)),
        b_per_bin=b.to_base(Decimal(b_per_bin)))
    return PoolSeed(a, b, {**state, "volatility": volatility})


SEEDS = (
    _pool(SOL, USDC, "150.30", "80", "12000", bin_step=10, base_factor=8000,
          variable_fee_control=40_000, bins_each_side=300),      # 0.08 %
    _pool(SOL, USDT, "149.85", "80", "12000", bin_step=10, base_factor=8000,
          variable_fee_control=40_000, bins_each_side=300),      # 0.08 %
    _pool(USDC, USDT, "1", "500000", "500000", bin_step=1, base_factor=10000,
          variable_fee_control=400_000, bins_each_side=100, volatility=0.1),     # 0.01 %
)


class Meteora(SimVenue):
    name = "meteora"
    program_name = "dlmm"
    program = dlmm
    seeds = SEEDS


def create(env: VenueEnvironment) -> Venue:
    return Meteora(env)
