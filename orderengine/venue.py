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
from typing import Mapping

from orderengine.errors import (  # noqa: F401  (re-exported for plugin authors)
    ExecutionError, InsufficientLiquidity, NoRoute, SlippageExceeded,
    TransactionFailed, VenueUnavailable,
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
    the engine calls them from its own I/O threads with a timeout."""

    name: str = "venue"
    #: what the venue can do, for clients and operators to read (GET /api/venues):
    #: "swap_exact_in" (all venues today), "wrapped_sol" (pools hold wSOL), ...
    capabilities: frozenset[str] = frozenset({"swap_exact_in"})
    #: how long a sent transaction usually takes to settle; the engine waits
    #: about this long before it first asks for the status.
    confirmation_hint_ms: int = 0

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
