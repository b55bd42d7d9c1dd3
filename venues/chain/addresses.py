"""Solana-looking names: base58 account addresses and transaction signatures."""
from __future__ import annotations

import hashlib

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    """Bitcoin/Solana base58: leading zero bytes become '1'."""
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_B58_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def signature_for(client_tx_id: str) -> str:
    """A Solana-looking signature (64 bytes, base58) that the id alone determines,
    so a re-send under the same id cannot mint a second transaction."""
    return b58encode(hashlib.sha512(client_tx_id.encode()).digest())


def address_for(seed: str) -> str:
    """A Solana-looking account address (32 bytes, base58) derived from `seed`."""
    return b58encode(hashlib.sha256(seed.encode()).digest())
