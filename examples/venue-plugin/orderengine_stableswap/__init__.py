"""A third-party venue for orderengine: a stable-swap pool for USDC/USDT.

Installed beside orderengine, it is found through the `orderengine.venues` entry
point; orderengine needs no change. It imports the venue contract
(`orderengine.venue`) and the simulated network it trades on (`venues.chain`),
the way a real adapter imports its chain's RPC client.
"""
from __future__ import annotations

import time
from decimal import Context, Decimal

from orderengine.venue import (NoRoute, PoolInfo, Quote, SwapRequest, Token, TxStatus, Venue,
                               VenueEnvironment, VenueUnavailable)
from orderengine_stableswap import curve
from venues.chain import SimChain, address_for, get_chain, register_program

PROGRAM = "stableswap"
register_program(PROGRAM, curve.swap, curve.mid_price)  # in every process that loads the plugin

USDC_MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT_MINT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
DECIMALS = 6
SEED_RESERVE = 50_000_000 * 10**DECIMALS   # 50 M of each
AMP, FEE_RATE = 2000, 40                    # A = 2000, 0.004 %
_CTX = Context(prec=28)


class StableSwap(Venue):
    name = "stableswap"

    def __init__(self, env: VenueEnvironment) -> None:
        self._env = env
        self.confirmation_hint_ms = env.exec_latency_ms
        self.pool_id = address_for(f"{self.name}:{PROGRAM}:USDC/USDT")
        self._chain: SimChain | None = None

    def _ready(self) -> SimChain:
        if self._chain is None:
            chain = get_chain(self._env.chain_url, self._env.exec_latency_ms, self._env.fail_rate,
                              self._env.market_seed)
            chain.ensure_pool(self.pool_id, PROGRAM, {
                **curve.new_pool(SEED_RESERVE, SEED_RESERVE, AMP, FEE_RATE), "volatility": 0.1,
                "mint_a": USDC_MINT, "mint_b": USDT_MINT, "decimals_a": DECIMALS, "decimals_b": DECIMALS})
            self._chain = chain
        return self._chain

    def _direction(self, token_in: Token, token_out: Token) -> bool:
        pair = (token_in.pool_mint, token_out.pool_mint)
        if pair == (USDC_MINT, USDT_MINT):
            return True
        if pair == (USDT_MINT, USDC_MINT):
            return False
        raise NoRoute(f"{self.name} only trades USDC/USDT.")

    def pools(self) -> list[PoolInfo]:
        state = self._call(lambda c: c.pool_state(self.pool_id))
        return [PoolInfo(self.pool_id, "USDC", "USDT", Decimal(FEE_RATE).scaleb(-4),
                         curve.mid_price(state).quantize(Decimal("1e-8")),
                         {"USDC": Decimal(state["reserve_a"]).scaleb(-DECIMALS),
                          "USDT": Decimal(state["reserve_b"]).scaleb(-DECIMALS)})]

    def quote(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Quote:
        a_to_b = self._direction(token_in, token_out)
        time.sleep(self._env.quote_latency_ms / 1000)  # the RPC round trip
        state = self._call(lambda c: c.pool_state(self.pool_id))
        base_in = token_in.to_base(amount_in)
        out, fee, _ = curve.swap(state, a_to_b, base_in)
        mid = curve.mid_price(state) if a_to_b else 1 / curve.mid_price(state)
        amount_out = token_out.from_base(out)
        impact = (1 - _CTX.divide(Decimal(out), (base_in - fee) * mid)) * 100
        return Quote(self.name, self.pool_id, token_in, token_out, amount_in, amount_out,
                     token_in.from_base(fee), token_in, _CTX.divide(amount_out, amount_in),
                     max(impact, Decimal(0)).quantize(Decimal("0.0001")))

    def execute(self, swap: SwapRequest, client_tx_id: str) -> str:
        a_to_b = self._direction(swap.token_in, swap.token_out)
        min_out = int(swap.min_amount_out.scaleb(DECIMALS).to_integral_value("ROUND_CEILING"))
        return self._call(lambda c: c.send(f"{self.name}:{client_tx_id}", self.pool_id, PROGRAM, a_to_b,
                                           swap.token_in.to_base(swap.amount_in), min_out))

    def status(self, signature: str) -> TxStatus:
        return self._call(lambda c: c.status(signature))

    def lookup(self, client_tx_id: str) -> TxStatus:
        return self._call(lambda c: c.lookup(f"{self.name}:{client_tx_id}"))

    def _call(self, fn):
        try:
            return fn(self._ready())
        except (NoRoute, VenueUnavailable):
            raise
        except Exception as exc:  # the network is down: say so, as a venue
            raise VenueUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc


def create(env: VenueEnvironment) -> Venue:
    return StableSwap(env)
