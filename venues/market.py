"""A market that moves: seeded noise traders and arbitrage, on the simulated chain.

Every tick (one second of chain time), in every pool of every pair:
  1. a noise trader moves the pool's price by a seeded random factor exp(σ·v·z),
     z drawn from Random(f"{seed}:{pool}:{tick}"), the same in every process
     (v is the pool state's "volatility", 1 unless the pool says otherwise:
     a stablecoin pool says 0.1);
  2. an arbitrageur trades it a fraction `revert` of the way back to the mean
     price of the pair across venues (which itself is pulled gently towards the
     pair's price at the first tick, so the market wanders but stays anchored).
Both are real swaps through the pool's own program, so reserves and bins move
exactly as a user's trade would move them. The venues drift a few percent
apart from time to time and are pulled back together, and a fill by one order
moves the price the next order sees.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from orderengine.venue import InsufficientLiquidity

Swap = Callable[[dict[str, Any], bool, int], tuple[int, int, dict[str, Any]]]
Mid = Callable[[dict[str, Any]], Decimal]

BISECTION_STEPS = 40


@dataclass(frozen=True)
class MarketParams:
    tick_ms: int = 1000
    sigma: float = 0.0005       # noise per tick: 0.05 % (~0.09 % over a 3 s confirmation)
    revert: float = 0.0025      # arbitrage closes 0.25 % of a venue's gap to the mean per tick
    anchor_pull: float = 0.0005  # the mean drifts back to the first price, slowly
    max_catch_up: int = 30      # after a long idle time only the last ticks are played


def noise(seed: int, pool_id: str, tick: int, sigma: float) -> float:
    """The noise trader's price factor for one pool and tick."""
    return math.exp(sigma * random.Random(f"{seed}:{pool_id}:{tick}").gauss(0.0, 1.0))


def targets(mids: dict[str, float], anchor: float, moved: dict[str, float], p: MarketParams) -> dict[str, float]:
    """Where each pool's price goes this tick: its noisy price, pulled towards the
    (anchored) geometric mean of the pair's noisy prices."""
    noisy = {pid: mids[pid] * moved[pid] for pid in mids}
    mean = math.exp(sum(math.log(v) for v in noisy.values()) / len(noisy))
    mean *= (anchor / mean) ** p.anchor_pull
    return {pid: v * (mean / v) ** p.revert for pid, v in noisy.items()}


def trade_to_price(swap: Swap, mid: Mid, state: dict[str, Any], target: Decimal) -> dict[str, Any]:
    """The state after the smallest swap that takes the pool's mid price (B per
    A) to `target` or past it (as far as the pool's liquidity goes)."""
    current = mid(state)
    if current == target:
        return state
    a_to_b = target < current  # selling A lowers its price

    def attempt(amount: int) -> dict[str, Any] | None:
        try:
            return swap(state, a_to_b, amount)[2]
        except (InsufficientLiquidity, ValueError):  # too small to pay out, or too big to fill
            return None

    def passed(after: dict[str, Any]) -> bool:
        return mid(after) <= target if a_to_b else mid(after) >= target

    lo, hi, best, last_ok = 0, 1, None, None
    for _ in range(BISECTION_STEPS):  # grow by 4x until the target is passed
        after = attempt(hi)
        if after is None and last_ok is not None:
            return last_ok  # the pool cannot move further that way
        if after is not None and passed(after):
            best = after
            break
        if after is not None:
            lo, last_ok = hi, after
        hi *= 4
    else:
        return state
    for _ in range(BISECTION_STEPS):
        if hi - lo <= 1:
            break
        middle = (lo + hi) // 2
        after = attempt(middle)
        if after is not None and passed(after):
            hi, best = middle, after
        else:
            lo = middle
    return best


def pair_key(state: dict[str, Any]) -> tuple[str, str]:
    return tuple(sorted((state["mint_a"], state["mint_b"])))  # type: ignore[return-value]


def oriented_mid(mid: Mid, state: dict[str, Any]) -> float:
    """The pool's price as the pair's first mint priced in its second (base units)."""
    price = float(mid(state))
    return price if state["mint_a"] == pair_key(state)[0] else 1.0 / price


def play_tick(pools: dict[str, tuple[dict[str, Any], Swap, Mid]], anchors: dict[str, float],
              tick: int, seed: int, p: MarketParams) -> dict[str, dict[str, Any]]:
    """One tick over every pool: {pool_id: (state, swap, mid)} -> {pool_id: new state}.
    `anchors` (pair -> first price) is filled in for pairs seen the first time."""
    by_pair: dict[tuple[str, str], list[str]] = {}
    for pool_id, (state, _, _) in pools.items():
        by_pair.setdefault(pair_key(state), []).append(pool_id)
    out: dict[str, dict[str, Any]] = {}
    for pair, ids in by_pair.items():
        mids = {pid: oriented_mid(pools[pid][2], pools[pid][0]) for pid in ids}
        anchor = anchors.setdefault(json.dumps(pair), math.exp(sum(map(math.log, mids.values())) / len(mids)))
        moved = {pid: noise(seed, pid, tick, p.sigma * pools[pid][0].get("volatility", 1.0)) for pid in ids}
        for pid, target in targets(mids, anchor, moved, p).items():
            state, swap, mid = pools[pid]
            raw = target if state["mint_a"] == pair[0] else 1.0 / target
            out[pid] = trade_to_price(swap, mid, state, Decimal(repr(raw)))
    return out
