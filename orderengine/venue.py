"""The venue contract: the only module a venue plugin imports.

A venue is found through the entry point group ``orderengine.venues``. The
entry point names a factory ``factory(env: VenueEnvironment) -> Venue``. The
engine asks a venue for quotes, sends it one swap per attempt under a client
transaction id, and asks it for the status of what it sent; the venue knows
nothing of orders, queues or the engine's tables.

Amounts are ``Decimal`` in token units; a venue computes them exactly in base
units (``Token.to_base`` / ``Token.from_base``).
"""
from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Mapping, Sequence

from orderengine.errors import (  # noqa: F401  (re-exported for plugin authors)
    ExecutionError, InsufficientLiquidity, NoRoute, SlippageExceeded,
    TransactionFailed, VenueTimeout, VenueUnavailable,
)
from orderengine.tokens import Token  # noqa: F401

ENTRY_POINT_GROUP = "orderengine.venues"


@dataclass(frozen=True)
class VenueEnvironment:
    """What the engine hands a venue factory: the shared settings, and the raw
    environment for a plugin's own variables."""
    chain_url: str
    quote_latency_ms: int = 200
    exec_latency_ms: int = 2500
    fail_rate: float = 0.0
    market_seed: int = 7
    environ: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolInfo:
    """A pool as `orderengine venues` and GET /api/venues show it."""
    pool_id: str
    token_a: str            # symbols
    token_b: str
    fee_pct: Decimal        # fee on input, in percent (0.25 = 0.25 %)
    mid_price: Decimal      # token_b per token_a
    liquidity: dict[str, Decimal] = field(default_factory=dict)  # symbol -> units held


@dataclass(frozen=True)
class Quote:
    """What a swap of `amount_in` would pay out against the pool as it is now."""
    venue: str
    pool_id: str
    token_in: Token
    token_out: Token
    amount_in: Decimal
    amount_out: Decimal       # what the pool pays: after a fee on the input, before a fee on the output
    fee: Decimal              # charged, in `fee_token` units (the input or the output token)
    fee_token: Token
    price: Decimal            # amount_out / amount_in (token_out per token_in)
    price_impact_pct: Decimal  # how much worse than the pool's mid price, in percent


@dataclass(frozen=True)
class QuoteRequest:
    """One swap to price: `amount_in` of `token_in` for `token_out`."""
    token_in: Token
    token_out: Token
    amount_in: Decimal


@dataclass(frozen=True)
class SwapRequest:
    """One swap to send: the chosen quote's pool, the input, and the floor."""
    pool_id: str
    token_in: Token
    token_out: Token
    amount_in: Decimal
    min_amount_out: Decimal


class TxState(str, enum.Enum):
    UNKNOWN = "unknown"      # the venue never received this transaction
    PENDING = "pending"      # received, not yet final
    CONFIRMED = "confirmed"  # landed: the amounts are final
    FAILED = "failed"        # definitely did not fill: safe to try again


@dataclass(frozen=True)
class TxStatus:
    state: TxState
    signature: str | None = None
    amount_in: Decimal | None = None
    amount_out: Decimal | None = None
    fee: Decimal | None = None
    error_code: str | None = None
    error_message: str | None = None


class Venue(abc.ABC):
    """A DEX the engine can route to. Methods may block (network round trips);
    the engine calls them from its own I/O threads with a time limit: quotes
    QUOTE_TIMEOUT_MS, execute/status/lookup and their batch forms
    VENUE_CALL_TIMEOUT_MS, on a bounded number of threads per venue. A call that
    outlives its limit is abandoned (its thread is not reused until it returns),
    and while every thread lent to a venue waits, further calls fail at once with
    VENUE_TIMEOUT: a hung venue costs a bounded number of threads, never a queue."""

    name: str = "venue"
    #: what the venue can do, for clients and operators to read (GET /api/venues):
    #: "swap_exact_in" (all venues today), "wrapped_sol" (pools hold wSOL), ...
    capabilities: frozenset[str] = frozenset({"swap_exact_in"})
    #: how long a sent transaction usually takes to settle; the engine waits
    #: about this long before it first asks for the status.
    confirmation_hint_ms: int = 0
    #: how long after it was sent a transaction can still land (Solana: a blockhash is
    #: good for ~150 slots, about 60-90 s). A transaction the venue still calls UNKNOWN
    #: after this, on a last `lookup`, has been dropped: the order fails TX_DROPPED.
    validity_window_s: float = 90.0

    @abc.abstractmethod
    def pools(self) -> list[PoolInfo]:
        """The pools this venue trades."""

    @abc.abstractmethod
    def quote(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Quote:
        """Price a swap against current pool state. Raises NoRoute if this venue
        has no pool for the pair, InsufficientLiquidity if it cannot fill it."""

    @abc.abstractmethod
    def execute(self, swap: SwapRequest, client_tx_id: str) -> str:
        """Send the swap; return its signature at once (do not wait for it to
        land). Idempotent on `client_tx_id`: the same id twice fills once and
        returns the same signature."""

    @abc.abstractmethod
    def status(self, signature: str) -> TxStatus:
        """Where a sent transaction stands."""

    @abc.abstractmethod
    def lookup(self, client_tx_id: str) -> TxStatus:
        """Where the transaction sent under `client_tx_id` stands; UNKNOWN when
        the venue never received it (so sending it is safe)."""

    # --- batches: the engine works on many orders at once ------------------------
    # Each has a default that loops over the one-at-a-time method, so a plugin that
    # only implements those keeps working; a venue whose API takes batches (Solana's
    # getSignatureStatuses takes up to 256 signatures) overrides them.

    #: the most items the engine passes to one batch call
    max_batch: int = 256

    def quotes(self, requests: Sequence[QuoteRequest]) -> list[Quote | ExecutionError]:
        """Price many swaps against current pool state: one answer per request, in
        order, each a Quote or the ExecutionError that `quote` would raise for it.
        An error that concerns the whole call (the venue is unreachable) may be raised."""
        out: list[Quote | ExecutionError] = []
        for r in requests:
            try:
                out.append(self.quote(r.token_in, r.token_out, r.amount_in))
            except ExecutionError as exc:
                out.append(exc)
        return out

    def execute_many(self, sends: Sequence[tuple[SwapRequest, str]]) -> list[str | Exception]:
        """Send many swaps, each under its client transaction id (idempotent as
        `execute`): one answer per send, in order, its signature or the exception
        `execute` would raise for it."""
        out: list[str | Exception] = []
        for swap, client_tx_id in sends:
            try:
                out.append(self.execute(swap, client_tx_id))
            except Exception as exc:  # reported per send: the engine decides what it means
                out.append(exc)
        return out

    def statuses(self, signatures: Sequence[str]) -> list[TxStatus]:
        """Where many sent transactions stand, one TxStatus per signature, in order
        (like Solana's getSignatureStatuses). Raises when the venue cannot answer."""
        return [self.status(s) for s in signatures]

    def lookups(self, client_tx_ids: Sequence[str]) -> list[TxStatus]:
        """`lookup` for many client transaction ids, one TxStatus each, in order."""
        return [self.lookup(c) for c in client_tx_ids]

    def maintain(self) -> None:
        """Called about once a second from one background thread of every worker
        process (never on a request or a step): the place for a venue's periodic
        work. The simulated venues move their market here. Default: nothing."""
