"""Meteora DLMM arithmetic: liquidity held in discrete price bins.

Bin i trades at the constant price (1 + bin_step/10000)^i, in token-B base
units per token-A base unit, so a swap inside one bin moves no price; a swap
that empties the active bin carries on in the next one (down in price when it
sells A for the bins' B, up when it buys A). The fee is a base fee
(base_factor × bin_step / 1e8) plus a variable fee that grows with the bins
crossed since the reference bin; the volatility behind it decays by
`decay_factor` at each swap. The fee is charged on the input, rounded up, and
kept out of the bins: it is the liquidity providers', not tradeable liquidity.
Pure functions over a JSON-able state, in integer base units.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal
from functools import lru_cache
from typing import Any

from orderengine.venue import InsufficientLiquidity
from venues.pricing import SwapQuote, ceil_div, impact_pct

BASIS = 10_000              # bin steps, decay factor and one bin of volatility
FEE_PRECISION = 10**9       # fee rates are in billionths, as on chain
MAX_FEE_RATE = 10**8        # 10 %
_CTX = Context(prec=60)

State = dict[str, Any]


def new_pool(price: Decimal, *, bin_step: int, base_factor: int, variable_fee_control: int,
             max_volatility_accumulator: int, bins_each_side: int, a_per_bin: int,
             b_per_bin: int, decay_factor: int = 5000) -> State:
    """A pool around `price` (B base units per A base unit): bins above the active
    one hold A, bins below hold B, the active bin half of each."""
    active = active_id_for(price, bin_step)
    bins = {}
    for i in range(active - bins_each_side, active + bins_each_side + 1):
        if i == active:
            bins[str(i)] = [a_per_bin // 2, b_per_bin // 2]
        else:
            bins[str(i)] = [a_per_bin, 0] if i > active else [0, b_per_bin]
    return {
        "bin_step": bin_step, "base_factor": base_factor,
        "variable_fee_control": variable_fee_control,
        "max_volatility_accumulator": max_volatility_accumulator, "decay_factor": decay_factor,
        "active_id": active, "index_reference": active,
        "volatility_accumulator": 0, "volatility_reference": 0,
        "bins": bins, "fees_a": 0, "fees_b": 0,
    }


@lru_cache(maxsize=8192)
def bin_price(bin_step: int, bin_id: int) -> Decimal:
    return _CTX.power(1 + Decimal(bin_step) / BASIS, bin_id)


def active_id_for(price: Decimal, bin_step: int) -> int:
    """The bin whose price is nearest `price`."""
    ratio = _CTX.divide(_CTX.ln(price), _CTX.ln(1 + Decimal(bin_step) / BASIS))
    return int(ratio.to_integral_value(ROUND_HALF_EVEN))


def fee_rate(state: State, volatility_accumulator: int) -> int:
    """Base plus variable fee, in billionths, capped at 10 %."""
    base = state["base_factor"] * state["bin_step"] * 10
    squared = (volatility_accumulator * state["bin_step"]) ** 2
    variable = ceil_div(squared * state["variable_fee_control"], 10**11)
    return min(base + variable, MAX_FEE_RATE)


def swap(state: State, a_to_b: bool, amount_in: int) -> tuple[int, int, State]:
    """The chain program: walk bins from the active one until `amount_in` is spent."""
    if amount_in <= 0:
        raise ValueError("amount_in must be positive")
    bins = dict(state["bins"])
    active = state["active_id"]
    reference = state["volatility_accumulator"] * state["decay_factor"] // BASIS
    accumulator = state["volatility_accumulator"]
    step = -1 if a_to_b else 1
    remaining, total_out, total_fee = amount_in, 0, 0
    while remaining > 0:
        if str(active) not in bins and not _within(bins, active):
            raise InsufficientLiquidity("The pool's bins ran out before the swap was filled.")
        a, b = bins.get(str(active), (0, 0))
        reserve = b if a_to_b else a
        if reserve == 0:
            active += step
            continue
        accumulator = min(reference + abs(active - state["active_id"]) * BASIS,
                          state["max_volatility_accumulator"])
        net, fee, out = _fill_bin(remaining, reserve, bin_price(state["bin_step"], active),
                                  a_to_b, fee_rate(state, accumulator))
        remaining -= net + fee
        total_out += out
        total_fee += fee
        bins[str(active)] = [a + net, b - out] if a_to_b else [a - out, b + net]
        if remaining > 0:
            active += step
    if total_out == 0:
        raise InsufficientLiquidity("The pool pays nothing for this amount.")
    new_state = dict(state, bins=bins, active_id=active, index_reference=state["active_id"],
                     volatility_reference=reference, volatility_accumulator=accumulator)
    fee_key = "fees_a" if a_to_b else "fees_b"
    new_state[fee_key] = state[fee_key] + total_fee
    return total_out, total_fee, new_state


def _within(bins: dict[str, Any], bin_id: int) -> bool:
    """Whether `bin_id` lies between the pool's lowest and highest bin (asked only off
    the bins, so that a swap does not read every bin id: that was most of its cost)."""
    ids = [int(k) for k in bins]
    return min(ids) <= bin_id <= max(ids)


def _fill_bin(remaining: int, reserve: int, price: Decimal, a_to_b: bool,
              rate: int) -> tuple[int, int, int]:
    """(net input, fee, output) for one bin: all of it if `remaining` can buy it all."""
    if a_to_b:
        max_net = _round(_CTX.divide(reserve, price), ROUND_CEILING)
    else:
        max_net = _round(_CTX.multiply(reserve, price), ROUND_CEILING)
    max_fee = ceil_div(max_net * rate, FEE_PRECISION - rate)
    if remaining >= max_net + max_fee:
        return max_net, max_fee, reserve
    fee = ceil_div(remaining * rate, FEE_PRECISION)
    net = remaining - fee
    if a_to_b:
        out = _round(_CTX.multiply(net, price), ROUND_FLOOR)
    else:
        out = _round(_CTX.divide(net, price), ROUND_FLOOR)
    return net, fee, min(out, reserve)


def _round(value: Decimal, rounding: str) -> int:
    return int(value.to_integral_value(rounding))


def marginal_price(state: State, a_to_b: bool) -> Decimal:
    """The price the next base unit trades at, as output per input base unit:
    the first bin from the active one that holds the output token."""
    bins, active, step = state["bins"], state["active_id"], -1 if a_to_b else 1
    while str(active) in bins and bins[str(active)][1 if a_to_b else 0] == 0:
        active += step
    price = bin_price(state["bin_step"], active)
    return price if a_to_b else _CTX.divide(1, price)


def mid_price(state: State) -> Decimal:
    """The active bin's price: B base units per A base unit."""
    return bin_price(state["bin_step"], state["active_id"])


def quote(state: State, a_to_b: bool, amount_in: int) -> SwapQuote:
    out, fee, _ = swap(state, a_to_b, amount_in)
    mid = marginal_price(state, a_to_b)
    return SwapQuote(amount_in, out, fee, mid, impact_pct(amount_in - fee, out, mid))


def liquidity(state: State) -> tuple[int, int]:
    bins = state["bins"].values()
    return sum(a for a, _ in bins), sum(b for _, b in bins)


def fee_pct(state: State) -> Decimal:
    """The base fee in percent (what a swap inside the active bin pays when calm)."""
    return Decimal(state["base_factor"] * state["bin_step"]).scaleb(-6)
