"""The token registry: symbols, mints and decimals.

Amounts are Decimal in token units everywhere in the engine; a token's
`decimals` says how many places it has on chain, and `to_base`/`from_base`
convert exactly to and from the integer base units a chain program sees.
Native SOL cannot be swapped by a pool: it is wrapped into wSOL first (and
unwrapped after), which `Token.native` tells the planner.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

U64_MAX = 2**64 - 1
WSOL_MINT = "So11111111111111111111111111111111111111112"


@dataclass(frozen=True)
class Token:
    symbol: str
    mint: str
    decimals: int
    native: bool = False

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.decimals)

    def to_base(self, amount: Decimal) -> int:
        """Token units to base units; the amount must be exact at this precision."""
        base = amount.scaleb(self.decimals)
        if base != base.to_integral_value():
            raise ValueError(f"{amount} has more than {self.decimals} decimals for {self.symbol}")
        return int(base)

    def from_base(self, base: int) -> Decimal:
        return Decimal(base).scaleb(-self.decimals)

    @property
    def pool_mint(self) -> str:
        """The mint a pool holds: wSOL for native SOL, the token's own otherwise."""
        return WSOL_MINT if self.native else self.mint


SOL = Token("SOL", WSOL_MINT, 9, native=True)
USDC = Token("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6)
USDT = Token("USDT", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6)

TOKENS: tuple[Token, ...] = (SOL, USDC, USDT)
_BY_KEY = {t.symbol: t for t in TOKENS} | {t.mint: t for t in TOKENS}


def find_token(key: str) -> Token | None:
    """A token by its symbol (case-insensitive) or its mint address (exact)."""
    if not isinstance(key, str):
        return None
    return _BY_KEY.get(key) or _BY_KEY.get(key.upper())


def by_symbol(symbol: str) -> Token:
    return _BY_KEY[symbol]
