"""What Raydium and Meteora have in common: pools on the simulated chain, priced
by a pure program over the state the chain holds.

A venue knows its pools by their two mints (native SOL trades as wSOL). It
quotes in batches after one simulated RPC round trip per call, on the pool
states the chain holds in memory; sends a batch of swaps to the chain in one
transaction under client transaction ids of its own namespace; and asks the
chain how many stand in one read. The one-at-a-time methods are batches of one.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal
from types import ModuleType
from typing import Any, Iterator, Sequence

from sqlalchemy import exc

from orderengine.venue import (
    ExecutionError, NoRoute, PoolInfo, Quote, QuoteRequest, SwapRequest, Token, TxStatus, Venue,
    VenueEnvironment, VenueUnavailable,
)
from venues.chain import ChainNotMigrated, Pool, Send, SimChain, UnknownPool, address_for, get_chain
from venues.pricing import units_price

_PRICE_CTX = Context(prec=20)
MID_QUANTUM = Decimal("1e-10")


@dataclass(frozen=True)
class PoolSeed:
    """A pool as it is first put on the chain: its tokens and its program state."""
    token_a: Token
    token_b: Token
    state: dict[str, Any]


class SimVenue(Venue):
    """A venue whose pools (`seeds`) are run by one chain program (`program_name`,
    priced by the pure module `program`). `chain` is for tests that bring their own."""

    capabilities = frozenset({"swap_exact_in", "wrapped_sol"})
    #: as on Solana (a blockhash is good for ~150 slots); the simulated chain keeps every
    #: transaction it took, so it never calls a sent one UNKNOWN
    validity_window_s = 90.0
    program_name: str
    program: ModuleType
    seeds: Sequence[PoolSeed] = ()

    def __init__(self, env: VenueEnvironment, chain: SimChain | None = None) -> None:
        self._env = env
        self.confirmation_hint_ms = env.exec_latency_ms
        self._seeds = {self.pool_address(s): s for s in self.seeds}
        self._by_mints = {(s.token_a.pool_mint, s.token_b.pool_mint): pid
                          for pid, s in self._seeds.items()}
        self._chain = chain
        self._seeded = False
        self._lock = threading.Lock()

    def pool_address(self, seed: PoolSeed) -> str:
        pair = f"{seed.token_a.symbol}/{seed.token_b.symbol}"
        return address_for(f"{self.name}:{self.program_name}:{pair}")

    # the contract: one at a time, as batches of one

    def pools(self) -> list[PoolInfo]:
        with _answering():
            known = self._known_pools()
        return [self._pool_info(pid, seed, known[pid].state) for pid, seed in self._seeds.items()]

    def quote(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Quote:
        return _one(self.quotes([QuoteRequest(token_in, token_out, amount_in)]))

    def execute(self, swap: SwapRequest, client_tx_id: str) -> str:
        return _one(self.execute_many([(swap, client_tx_id)]))

    def status(self, signature: str) -> TxStatus:
        return self.statuses([signature])[0]

    def lookup(self, client_tx_id: str) -> TxStatus:
        return self.lookups([client_tx_id])[0]

    # the contract: batches

    def quotes(self, requests: Sequence[QuoteRequest]) -> list[Quote | ExecutionError]:
        """One simulated RPC round trip for the whole call (none when no request has a
        pool here), then pure arithmetic on the pool states this process holds."""
        routes: list[tuple[str, bool] | ExecutionError] = []
        for r in requests:
            try:
                routes.append(self._route(r.token_in, r.token_out))
            except NoRoute as error:
                routes.append(error)
        if all(isinstance(route, ExecutionError) for route in routes):
            return list(routes)  # type: ignore[arg-type]
        time.sleep(self._env.quote_latency_ms / 1000)  # the RPC round trip
        with _answering():
            known = self._known_pools()
        out: list[Quote | ExecutionError] = []
        for request, route in zip(requests, routes):
            if isinstance(route, ExecutionError):
                out.append(route)
                continue
            try:
                out.append(self._price(request, route[0], route[1], known[route[0]].state))
            except ExecutionError as error:
                out.append(error)
        return out

    def execute_many(self, sends: Sequence[tuple[SwapRequest, str]]) -> list[str | Exception]:
        """All the sends in one chain transaction; a send refused here (another venue's
        pool, a pair without a pool, a non-positive amount) is answered alone."""
        answers: list[str | Exception | None] = []
        chain_sends: list[Send] = []
        for swap, client_tx_id in sends:
            try:
                chain_sends.append(self._send(swap, client_tx_id))
                answers.append(None)
            except (NoRoute, ValueError) as error:
                answers.append(error)
        try:
            with _answering():
                sent = iter(self._ready().send_many(chain_sends) if chain_sends else [])
        except VenueUnavailable as error:  # nothing is known of any of them: each says so
            return [a if a is not None else VenueUnavailable(error.message) for a in answers]
        return [a if a is not None else _venue_error(next(sent)) for a in answers]

    def statuses(self, signatures: Sequence[str]) -> list[TxStatus]:
        with _answering():
            return self._ready().statuses(signatures)

    def lookups(self, client_tx_ids: Sequence[str]) -> list[TxStatus]:
        with _answering():
            return self._ready().lookups([self._tx_key(c) for c in client_tx_ids])

    def maintain(self) -> None:
        """Land what is due on the chain and, in the one process holding the market's
        lease, play the market's ticks (Raydium and Meteora share the chain: it runs
        once however many of its venues are maintained)."""
        with _answering():
            self._ready().maintain()

    # internals

    def _price(self, request: QuoteRequest, pool_id: str, a_to_b: bool, state: dict[str, Any]) -> Quote:
        token_in, token_out, amount_in = request.token_in, request.token_out, request.amount_in
        priced = self.program.quote(state, a_to_b, token_in.to_base(amount_in))
        amount_out = token_out.from_base(priced.amount_out)
        return Quote(
            venue=self.name, pool_id=pool_id, token_in=token_in, token_out=token_out,
            amount_in=amount_in, amount_out=amount_out,
            fee=token_in.from_base(priced.fee), fee_token=token_in,
            price=_PRICE_CTX.divide(amount_out, amount_in),
            price_impact_pct=priced.price_impact_pct,
        )

    def _send(self, swap: SwapRequest, client_tx_id: str) -> Send:
        pool_id, a_to_b = self._route(swap.token_in, swap.token_out)
        if pool_id != swap.pool_id:
            raise NoRoute(f"{self.name} has no pool {swap.pool_id} for "
                          f"{swap.token_in.symbol}/{swap.token_out.symbol}.")
        return Send(self._tx_key(client_tx_id), pool_id, self.program_name, a_to_b,
                    swap.token_in.to_base(swap.amount_in), _min_out_base(swap.token_out, swap.min_amount_out))

    def _tx_key(self, client_tx_id: str) -> str:
        """The chain is shared by all venues: an id means one thing per venue."""
        return f"{self.name}:{client_tx_id}"

    def _route(self, token_in: Token, token_out: Token) -> tuple[str, bool]:
        mints = (token_in.pool_mint, token_out.pool_mint)
        if mints in self._by_mints:
            return self._by_mints[mints], True
        if mints[::-1] in self._by_mints:
            return self._by_mints[mints[::-1]], False
        raise NoRoute(f"{self.name} has no {token_in.symbol}/{token_out.symbol} pool.")

    def _ready(self) -> SimChain:
        """The chain, with this venue's pools on it (seeded on first use, so that
        building the venue never touches the database)."""
        with self._lock:
            if self._chain is None:
                env = self._env
                self._chain = get_chain(env.chain_url, env.exec_latency_ms, env.fail_rate, env.market_seed)
            if not self._seeded:
                for pool_id, seed in self._seeds.items():
                    self._chain.ensure_pool(pool_id, self.program_name, _with_tokens(seed))
                self._seeded = True
            return self._chain

    def _known_pools(self) -> dict[str, Pool]:
        """Every pool's state as the chain holds it in memory, this venue's included."""
        chain = self._ready()
        known = chain.pools()
        if not self._seeds.keys() <= known.keys():  # seeded a moment after the last reload
            known = chain.pools(max_age_ms=0)
        return known

    def _pool_info(self, pool_id: str, seed: PoolSeed, state: dict[str, Any]) -> PoolInfo:
        a, b = seed.token_a, seed.token_b
        held_a, held_b = self.program.liquidity(state)
        mid = units_price(self.program.mid_price(state), a.decimals, b.decimals)
        return PoolInfo(pool_id=pool_id, token_a=a.symbol, token_b=b.symbol,
                        fee_pct=self.program.fee_pct(state), mid_price=mid.quantize(MID_QUANTUM),
                        liquidity={a.symbol: a.from_base(held_a), b.symbol: b.from_base(held_b)})


def _with_tokens(seed: PoolSeed) -> dict[str, Any]:
    """The program state plus what the chain needs to report amounts in token units."""
    return {**seed.state,
            "mint_a": seed.token_a.pool_mint, "mint_b": seed.token_b.pool_mint,
            "decimals_a": seed.token_a.decimals, "decimals_b": seed.token_b.decimals}


def _min_out_base(token: Token, min_amount_out: Decimal) -> int:
    """The floor in base units, rounded up: the swap must pay at least what was asked."""
    return max(int(min_amount_out.scaleb(token.decimals).to_integral_value(ROUND_CEILING)), 0)


def _one(answers: list[Any]) -> Any:
    """The single answer of a batch of one, raised when it is an error."""
    if isinstance(answers[0], Exception):
        raise answers[0]
    return answers[0]


def _venue_error(answer: str | Exception) -> str | Exception:
    """The chain's refusal of one send, as the venue contract names it."""
    return NoRoute(str(answer)) if isinstance(answer, UnknownPool) else answer


@contextmanager
def _answering() -> Iterator[None]:
    """A chain that cannot be reached is a venue that does not answer."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        raise VenueUnavailable(f"The chain did not answer: {type(error).__name__}.") from error
    except ChainNotMigrated as error:
        raise VenueUnavailable(str(error)) from error
    except UnknownPool as error:
        raise NoRoute(str(error)) from error
