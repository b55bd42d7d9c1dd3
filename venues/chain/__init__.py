"""The simulated Solana chain every process shares, one job per module:

- `tables`: its `sim_*` tables (created by the engine's Alembic migrations);
- `engines`: its database engines (SQLite WAL + IMMEDIATE writers, PostgreSQL pool);
- `programs`: the pool programs deployed on it (`register_program`);
- `addresses`: base58 addresses and signatures;
- `ledger`: `SimChain`, pools and transactions (send, land, answer);
- `market_clock`: who plays the market's ticks (one process, under a lease).

A venue gets its chain with `get_chain(...)`; it imports nothing of the engine's
but the venue contract.
"""
from __future__ import annotations

import threading

from venues.chain.addresses import address_for, b58encode, signature_for
from venues.chain.engines import engine_for, normalize_url, writing
from venues.chain.ledger import A_TO_B, B_TO_A, Pool, Send, SimChain, utc_now
from venues.chain.market_clock import LEASE_MS, MarketClock
from venues.chain.programs import UnknownPool, program, register_program
from venues.chain.tables import (
    ChainNotMigrated, metadata, require_tables, sim_market, sim_pools, sim_transactions,
)
from venues.market import MarketParams

__all__ = [
    "A_TO_B", "B_TO_A", "LEASE_MS", "ChainNotMigrated", "MarketClock", "MarketParams", "Pool", "Send",
    "SimChain", "UnknownPool", "address_for", "b58encode", "engine_for", "get_chain", "metadata",
    "normalize_url", "program", "register_program", "require_tables", "signature_for", "sim_market",
    "sim_pools", "sim_transactions", "utc_now", "writing",
]

_chains: dict[tuple[str, int, float, int], SimChain] = {}
_chains_lock = threading.Lock()


def get_chain(url: str, exec_latency_ms: int = 2500, fail_rate: float = 0.0, seed: int = 7) -> SimChain:
    """The process's chain for these settings (one per settings, so Raydium and
    Meteora share one, and its pool cache); all of them share one engine per URL."""
    key = (normalize_url(url), exec_latency_ms, fail_rate, seed)
    with _chains_lock:
        if key not in _chains:
            _chains[key] = SimChain(key[0], exec_latency_ms=exec_latency_ms,
                                    fail_rate=fail_rate, seed=seed, market=MarketParams())
        return _chains[key]
