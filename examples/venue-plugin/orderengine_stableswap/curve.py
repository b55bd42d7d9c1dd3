"""Curve's stable-swap invariant for two coins, in integer base units.

A·n^n·Σx + D = A·D·n^n + D^(n+1) / (n^n·Πx): close to constant-sum (x + y = D)
near balance, so swaps between two dollars pay ~1:1 with little impact even at
size, and constant-product far from balance, so the pool is never drained.
The fee (millionths) is taken from the input and stays in the pool.
"""
from __future__ import annotations

from decimal import Decimal

from orderengine.venue import InsufficientLiquidity

N = 2
FEE_DENOMINATOR = 1_000_000


def new_pool(reserve_a: int, reserve_b: int, amp: int, fee_rate: int) -> dict:
    return {"reserve_a": reserve_a, "reserve_b": reserve_b, "amp": amp, "fee_rate": fee_rate}


def invariant(x: int, y: int, amp: int) -> int:
    """D by Newton's method, as the Curve contract computes it."""
    total = x + y
    if total == 0:
        return 0
    d, ann = total, amp * N ** N
    for _ in range(255):
        d_p = d * d // (x * N) * d // (y * N)
        previous = d
        d = (ann * total + d_p * N) * d // ((ann - 1) * d + (N + 1) * d_p)
        if abs(d - previous) <= 1:
            return d
    raise ArithmeticError("stable-swap invariant did not converge")


def other_balance(x_new: int, d: int, amp: int) -> int:
    """The balance y that keeps D when the other side becomes x_new."""
    ann = amp * N ** N
    c = d * d // (x_new * N) * d // (ann * N)
    b = x_new + d // ann
    y = d
    for _ in range(255):
        previous = y
        y = (y * y + c) // (2 * y + b - d)
        if abs(y - previous) <= 1:
            return y
    raise ArithmeticError("stable-swap balance did not converge")


def _reserves(state: dict, a_to_b: bool) -> tuple[int, int]:
    return (state["reserve_a"], state["reserve_b"]) if a_to_b else (state["reserve_b"], state["reserve_a"])


def swap(state: dict, a_to_b: bool, amount_in: int) -> tuple[int, int, dict]:
    """(amount out, fee in input units, new state)."""
    if amount_in <= 0:
        raise ValueError("amount_in must be positive")
    x, y = _reserves(state, a_to_b)
    fee = -(-amount_in * state["fee_rate"] // FEE_DENOMINATOR)
    net = amount_in - fee
    d = invariant(x, y, state["amp"])
    out = y - other_balance(x + net, d, state["amp"]) - 1  # rounded in the pool's favour
    if out <= 0 or out >= y:
        raise InsufficientLiquidity("The stable pool cannot pay for this amount.")
    x, y = x + amount_in, y - out
    new = dict(state, reserve_a=x if a_to_b else y, reserve_b=y if a_to_b else x)
    return out, fee, new


def mid_price(state: dict) -> Decimal:
    """B per A for a small trade, fee aside."""
    x = state["reserve_a"]
    probe = max(x // 1_000_000, 1)
    out, _, _ = swap(dict(state, fee_rate=0), True, probe)
    return Decimal(out) / Decimal(probe)
