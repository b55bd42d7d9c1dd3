"""Raydium: constant-product (CPMM) pools on the simulated chain.

Mids sit a little apart from Meteora's, so that each venue wins some trades:
Raydium pays more for SOL in USDT, Meteora more for SOL in USDC.
"""
from __future__ import annotations

from decimal import Decimal

from orderengine.tokens import SOL, USDC, USDT
from orderengine.venue import Token, Venue, VenueEnvironment
from venues import cpmm
from venues.simvenue import PoolSeed, SimVenue


def _pool(a: Token, reserve_a: str, b: Token, reserve_b: str, fee_rate: int,
          volatility: float = 1.0) -> PoolSeed:
    state = cpmm.new_pool(a.to_base(Decimal(reserve_a)), b.to_base(Decimal(reserve_b)), fee_rate)
    return PoolSeed(a, b, {**state, "volatility": volatility})


SEEDS = (
    _pool(SOL, "150000", USDC, "22500000", 2500),     # mid 150.00, 0.25 %
    _pool(SOL, "120000", USDT, "18024000", 2500),     # mid 150.20, 0.25 %
    _pool(USDC, "25000000", USDT, "25005000", 100, volatility=0.1),   # mid 1.0002, 0.01 %
)


class Raydium(SimVenue):
    name = "raydium"
    program_name = "cpmm"
    program = cpmm
    seeds = SEEDS


def create(env: VenueEnvironment) -> Venue:
    return Raydium(env)
