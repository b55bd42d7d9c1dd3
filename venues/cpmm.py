"""Raydium CPMM arithmetic, in integer base units as the on-chain program does it.

A constant-product pool: the trade fee is taken from the input (rounded up, in
the pool's favour) and stays in the pool; the rest moves along x·y = k and the
output is rounded down. Pure functions over a JSON-able state, so the chain can
store a pool and any process can price it.
"""
from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

from orderengine.venue import InsufficientLiquidity
from venues.pricing import SwapQuote, ceil_div, impact_pct

FEE_DENOMINATOR = 1_000_000  # fee rates are in millionths: 2500 = 0.25 %
_CTX = Context(prec=40)

State = dict[str, Any]


def new_pool(reserve_a: int, reserve_b: int, fee_rate: int) -> State:
    if reserve_a <= 0 or reserve_b <= 0 or not 0 <= fee_rate < FEE_DENOMINATOR:
        raise ValueError("a CPMM pool needs positive reserves and a fee rate below 100 %")
    return {"reserve_a": reserve_a, "reserve_b": reserve_b, "fee_rate": fee_rate}


def trade_fee(amount_in: int, fee_rate: int) -> int:
    return ceil_div(amount_in * fee_rate, FEE_DENOMINATOR)


def amount_out(amount_in: int, reserve_in: int, reserve_out: int, fee_rate: int) -> tuple[int, int]:
    """(output, fee) for `amount_in` against these reserves."""
    if amount_in <= 0:
        raise ValueError("amount_in must be positive")
    if reserve_in <= 0 or reserve_out <= 0:
        raise InsufficientLiquidity("The pool is empty.")
    fee = trade_fee(amount_in, fee_rate)
    net = amount_in - fee
    out = reserve_out * net // (reserve_in + net)
    if out <= 0:
        # the program rejects a swap that would pay nothing rather than take the input
        raise InsufficientLiquidity("The pool pays nothing for this amount.")
    return out, fee


def swap(state: State, a_to_b: bool, amount_in: int) -> tuple[int, int, State]:
    """The chain program: (output, fee, new state); the fee stays in the pool."""
    key_in, key_out = ("reserve_a", "reserve_b") if a_to_b else ("reserve_b", "reserve_a")
    out, fee = amount_out(amount_in, state[key_in], state[key_out], state["fee_rate"])
    new_state = dict(state)
    new_state[key_in] = state[key_in] + amount_in
    new_state[key_out] = state[key_out] - out
    return out, fee, new_state


def mid_price(state: State) -> Decimal:
    """The marginal price before any trade: B base units per A base unit."""
    return _CTX.divide(Decimal(state["reserve_b"]), Decimal(state["reserve_a"]))


def quote(state: State, a_to_b: bool, amount_in: int) -> SwapQuote:
    out, fee, _ = swap(state, a_to_b, amount_in)
    mid = mid_price(state) if a_to_b else _CTX.divide(1, mid_price(state))
    return SwapQuote(amount_in, out, fee, mid, impact_pct(amount_in - fee, out, mid))


def liquidity(state: State) -> tuple[int, int]:
    return state["reserve_a"], state["reserve_b"]


def fee_pct(state: State) -> Decimal:
    """The trade fee in percent (2500 millionths -> 0.25)."""
    return Decimal(state["fee_rate"]).scaleb(-4)
