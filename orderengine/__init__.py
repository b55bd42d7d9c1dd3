"""orderengine: an order execution engine for Solana DEX market orders."""

__version__ = "0.1.0"
