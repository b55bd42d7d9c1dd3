"""What every pool program's quote has in common: its result and its price impact.

A program prices in integer base units. Price impact is measured on the part of
the input that reached the curve (input minus fee), so it says how far the trade
moves the price, not what the fee costs; the fee is reported on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal

IMPACT_QUANTUM = Decimal("0.0001")
_CTX = Context(prec=40)


@dataclass(frozen=True)
class SwapQuote:
    """A swap priced in base units against one pool state."""
    amount_in: int
    amount_out: int
    fee: int                   # in input base units
    mid_price: Decimal         # output base units per input base unit, before the trade
    price_impact_pct: Decimal  # quantized to 4 places


def impact_pct(net_in: int, amount_out: int, mid_price: Decimal) -> Decimal:
    """(1 − executed price / mid price) × 100, on the amount after fees, never negative."""
    if net_in <= 0 or mid_price <= 0:
        return Decimal(0).quantize(IMPACT_QUANTUM)
    ratio = _CTX.divide(Decimal(amount_out), _CTX.multiply(Decimal(net_in), mid_price))
    pct = _CTX.multiply(1 - ratio, 100)
    return max(pct, Decimal(0)).quantize(IMPACT_QUANTUM, ROUND_HALF_UP)


def units_price(base_price: Decimal, decimals_in: int, decimals_out: int) -> Decimal:
    """A price in output base units per input base unit, as output tokens per input token."""
    return _CTX.plus(base_price.scaleb(decimals_in - decimals_out))


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
