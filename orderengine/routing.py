"""Routing: ask every venue for a quote, pick the one that pays out the most.

Quotes are fetched in parallel on this module's own I/O threads, each with a
timeout, so a slow or broken venue is left out of the decision (which says
why) instead of failing it, and the worker thread that asked is free at once:
waiting for quotes is not work. Each venue lends its quotes a bounded number of
threads (calls.py): one that hangs holds those and no more, and while they are
all stuck its quotes fail at once (VENUE_TIMEOUT) instead of queueing. Whatever
a venue raises or answers, the decision gets one outcome per venue: a quote, or
the reason there is none.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable, Mapping

from orderengine import metrics
from orderengine.amounts import decimal_str
from orderengine.calls import VenueCalls
from orderengine.errors import EngineError, InsufficientLiquidity, NoRoute, VenueTimeout
from orderengine.tokens import Token
from orderengine.venue import Quote, QuoteRequest, Venue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuoteOutcome:
    venue: str
    quote: Quote | None = None
    error_code: str | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.quote is None:
            return {"venue": self.venue, "error": {"code": self.error_code, "message": self.error_message}}
        q = self.quote
        return {"venue": self.venue, "pool": q.pool_id, "amountOut": decimal_str(q.amount_out),
                "fee": decimal_str(q.fee), "feeToken": q.fee_token.symbol,
                "netOut": decimal_str(net_out(q)), "price": decimal_str(q.price),
                "priceImpactPct": decimal_str(q.price_impact_pct)}


def net_out(quote: Quote) -> Decimal:
    """What the user receives: the pool's output, less any fee charged in the
    output token (a fee charged on the input is already out of amount_out)."""
    if quote.fee_token == quote.token_out:
        return quote.amount_out - quote.fee
    return quote.amount_out


def min_amount_out(expected_out: Decimal, slippage_bps: int, token_out: Token) -> Decimal:
    """expectedOut × (1 − bps/10000), rounded down to what the chain can hold."""
    raw = expected_out * (Decimal(10_000 - slippage_bps) / Decimal(10_000))
    return raw.quantize(token_out.quantum, rounding=ROUND_DOWN)


def plan_steps(token_in: Token, token_out: Token, venue: str, pool_id: str,
               amount_in: Decimal, min_out: Decimal) -> list[dict[str, Any]]:
    """The transaction's instructions: native SOL is wrapped before and unwrapped after."""
    steps: list[dict[str, Any]] = []
    if token_in.native:
        steps.append({"step": "wrapSol", "amount": decimal_str(amount_in)})
    steps.append({"step": "swap", "venue": venue, "pool": pool_id,
                  "mintIn": token_in.pool_mint, "mintOut": token_out.pool_mint,
                  "amountIn": decimal_str(amount_in), "minAmountOut": decimal_str(min_out)})
    if token_out.native:
        steps.append({"step": "unwrapSol"})
    return steps


def decide(outcomes: list[QuoteOutcome], token_in: Token, token_out: Token,
           amount_in: Decimal, slippage_bps: int) -> dict[str, Any]:
    """The routing decision, as the `building` event shows it. Raises NoRoute
    (retryable) when no venue quoted, InsufficientLiquidity when every venue
    that has the pair lacks the depth."""
    usable = [o for o in outcomes if o.quote is not None and net_out(o.quote) > 0]
    if not usable:
        codes = {o.error_code for o in outcomes}
        if codes and codes <= {InsufficientLiquidity.code, NoRoute.code} and InsufficientLiquidity.code in codes:
            raise InsufficientLiquidity("No venue has enough liquidity for this order.")
        reasons = "; ".join(f"{o.venue}: {o.error_code}" for o in outcomes) or "no venues registered"
        raise NoRoute(f"No venue returned a usable quote ({reasons}).")
    # Highest net output wins; ties go to the venue listed first (stable, by name).
    best = max(usable, key=lambda o: net_out(o.quote))
    expected = net_out(best.quote)
    floor = min_amount_out(expected, slippage_bps, token_out)
    return {
        "quotes": [o.to_dict() for o in outcomes],
        "venue": best.venue,
        "pool": best.quote.pool_id,
        "expectedOut": decimal_str(expected),
        "minAmountOut": decimal_str(floor),
        "plan": plan_steps(token_in, token_out, best.venue, best.quote.pool_id, amount_in, floor),
    }


def _failed(name: str, exc: BaseException) -> QuoteOutcome:
    """A venue's error as a quote outcome; a plugin's bug must not fail the decision."""
    if isinstance(exc, EngineError):
        return QuoteOutcome(name, error_code=exc.code, error_message=exc.message)
    return QuoteOutcome(name, error_code="VENUE_ERROR", error_message=f"{type(exc).__name__}: {exc}")


def _outcome(name: str, answer: Any) -> QuoteOutcome:
    """One answer of a venue's `quotes`: a usable Quote, or why it is not one (an error it
    returned, or an answer that breaks the contract: left out, never trusted)."""
    if isinstance(answer, BaseException):
        return _failed(name, answer)
    if not isinstance(answer, Quote):
        return QuoteOutcome(name, error_code="VENUE_ERROR",
                            error_message=f"the venue answered {type(answer).__name__}, not a Quote")
    try:
        if not (isinstance(answer.amount_out, Decimal) and isinstance(answer.fee, Decimal)
                and answer.amount_out.is_finite() and answer.fee.is_finite()):
            raise TypeError("amounts must be finite Decimals")
        net_out(answer)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is left out
        return QuoteOutcome(name, error_code="VENUE_ERROR", error_message=f"a malformed quote: {exc}")
    return QuoteOutcome(name, quote=answer)


class QuoteFetcher:
    """Fetches quotes from every venue at once, on its own threads."""

    def __init__(self, venues: Mapping[str, Venue], timeout_s: float, io_threads: int = 16) -> None:
        self.venues = venues
        self.timeout_s = timeout_s
        # threads of its own per venue, a bounded number: one that hangs cannot starve the
        # others' quotes, nor pile up calls behind its stuck ones
        self._calls = {name: VenueCalls(name, io_threads, timeout_s, kind="quote") for name in venues}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="quote-loop", daemon=True)
        self._thread.start()

    def fetch_many(self, requests: list[QuoteRequest],
                   done: Callable[[list[list[QuoteOutcome]]], None]) -> Future:
        """Start fetching quotes for many swaps: one `quotes` call per venue (in chunks
        of its `max_batch`), all venues at once. `done(outcomes)` runs on an I/O
        thread with one list per request (one outcome per venue, by venue name)
        when every venue has answered or timed out. Returns at once."""
        fut = asyncio.run_coroutine_threadsafe(self._gather_many(requests), self._loop)

        def _finish(f: Future) -> None:
            if f.cancelled():  # shutting down: the orders are handed back
                return
            try:
                outcomes = f.result()
            except Exception as exc:  # never leave the orders waiting for quotes that won't come
                log.exception("quote fetching failed")
                outcomes = [[_failed(name, exc) for name in sorted(self.venues)] for _ in requests]
            try:
                done(outcomes)
            except Exception:
                log.exception("quote continuation failed")
        fut.add_done_callback(_finish)
        return fut

    async def _gather_many(self, requests: list[QuoteRequest]) -> list[list[QuoteOutcome]]:
        names = sorted(self.venues)
        per_venue = await asyncio.gather(*(self._many(n, requests) for n in names))
        return [[answers[i] for answers in per_venue] for i in range(len(requests))]

    async def _many(self, name: str, requests: list[QuoteRequest]) -> list[QuoteOutcome]:
        venue = self.venues[name]
        size = max(1, venue.max_batch)
        chunks = [requests[i:i + size] for i in range(0, len(requests), size)]
        answers = await asyncio.gather(*(self._chunk(name, venue, c) for c in chunks))
        outcomes = [outcome for chunk in answers for outcome in chunk]
        metrics.quotes_fetched(name, outcomes)
        return outcomes

    async def _chunk(self, name: str, venue: Venue, requests: list[QuoteRequest]) -> list[QuoteOutcome]:
        try:
            call = asyncio.wrap_future(self._calls[name].submit(venue.quotes, requests))
            answers = await asyncio.wait_for(call, self.timeout_s)
        except asyncio.TimeoutError:
            return [QuoteOutcome(name, error_code=VenueTimeout.code,
                                 error_message=f"no quote within {int(self.timeout_s * 1000)} ms")] * len(requests)
        except Exception as exc:  # the whole call failed (or a plugin's bug): no quote from it
            return [_failed(name, exc)] * len(requests)
        if not isinstance(answers, (list, tuple)) or len(answers) != len(requests):
            return [QuoteOutcome(name, error_code="VENUE_ERROR",
                                 error_message="the venue answered a different number of quotes")] * len(requests)
        return [_outcome(name, a) for a in answers]

    def fetch_now(self, token_in: Token, token_out: Token, amount_in: Decimal) -> list[QuoteOutcome]:
        """One swap's quotes from every venue, waiting for them (one per venue, by name)."""
        request = QuoteRequest(token_in, token_out, amount_in)
        return asyncio.run_coroutine_threadsafe(self._gather_many([request]), self._loop).result()[0]

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(timeout=2)
        except Exception:  # the loop is already gone
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        for calls in self._calls.values():
            calls.close()
