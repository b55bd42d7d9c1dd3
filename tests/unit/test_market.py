"""The simulated market: seeded noise plus arbitrage, through the pools' own programs."""
import datetime as dt
import functools
from decimal import Decimal

import pytest

from orderengine.tokens import SOL, USDC
from orderengine.venue import VenueEnvironment
from venues import cpmm, dlmm
from venues.chain import SimChain
from venues.market import MarketParams, oriented_mid, play_tick, trade_to_price
from venues.meteora import SEEDS as METEORA_SEEDS
from venues.raydium import SEEDS as RAYDIUM_SEEDS, Raydium
from venues.simvenue import _with_tokens

PROGRAMS = {"cpmm": (cpmm.swap, cpmm.mid_price), "dlmm": (dlmm.swap, dlmm.mid_price)}


@pytest.mark.parametrize("program,seed", [("cpmm", RAYDIUM_SEEDS[0]), ("dlmm", METEORA_SEEDS[0])])
@pytest.mark.parametrize("factor", ["1.004", "0.993"])
def test_a_trade_takes_the_pool_to_the_target_price(program, seed, factor):
    swap, mid = PROGRAMS[program]
    target = mid(seed.state) * Decimal(factor)
    after = trade_to_price(swap, mid, seed.state, target)
    moved = mid(after) / mid(seed.state)
    # DLMM prices move bin by bin (0.1 %): the first bin at or past the target
    assert abs(moved - Decimal(factor)) < Decimal("0.0011")
    assert (moved > 1) == (Decimal(factor) > 1)


def sol_usdc_pools():
    return {"raydium": (_with_tokens(RAYDIUM_SEEDS[0]), *PROGRAMS["cpmm"]),
            "meteora": (_with_tokens(METEORA_SEEDS[0]), *PROGRAMS["dlmm"])}


@functools.lru_cache(maxsize=4)
def run(ticks, seed=7):
    pools, anchors, mids = sol_usdc_pools(), {}, []
    for tick in range(ticks):
        for pid, state in play_tick(pools, anchors, tick, seed, MarketParams()).items():
            pools[pid] = (state, *pools[pid][1:])
        mids.append({pid: oriented_mid(p[2], p[0]) for pid, p in pools.items()})
    return tuple(mids)


def test_the_market_is_the_same_for_the_same_seed():
    assert run(20) == run(20)
    assert run(20, seed=8) != run(20)


def test_venues_drift_apart_by_percents_and_are_pulled_back():
    mids = run(900)
    spreads = [m["meteora"] / m["raydium"] - 1 for m in mids]
    assert max(abs(s) for s in spreads) > 0.01       # a percent or more apart at times
    assert max(abs(s) for s in spreads) < 0.10       # but arbitrage keeps them together
    assert min(spreads) < 0 < max(spreads)           # each venue is the dearer one at times


def test_ticks_are_played_once_whichever_process_asks(tmp_path):
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]
    url = f"sqlite:///{tmp_path}/chain.db"
    chains = [SimChain(url, exec_latency_ms=0, clock=lambda: now[0], market=MarketParams()) for _ in range(2)]
    env = VenueEnvironment(chain_url=url, quote_latency_ms=0, exec_latency_ms=0)
    raydium = Raydium(env, chain=chains[0])
    first = raydium.quote(SOL, USDC, Decimal("1")).amount_out
    now[0] += dt.timedelta(seconds=5)
    chains[1].play_market()
    chains[0].play_market()  # already played by the other: nothing to do
    moved = raydium.quote(SOL, USDC, Decimal("1")).amount_out
    assert moved != first
    with chains[0]._engine.connect() as conn:
        version = conn.execute(__import__("sqlalchemy").text(
            "select version from sim_pools where pool_id = :p"), {"p": raydium.pools()[0].pool_id}).scalar()
    assert version == 2  # seeded, then one batch of five ticks


def test_both_venues_quote_the_best_price_at_some_time(tmp_path):
    mids = run(900)
    best = {("meteora" if m["meteora"] * 1.0017 > m["raydium"] else "raydium") for m in mids}
    assert best == {"meteora", "raydium"}  # 0.17 %: Raydium's fee over Meteora's base fee
