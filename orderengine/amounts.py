"""Decimal amounts as the API shows them: plain decimal strings, never floats."""
from __future__ import annotations

from decimal import Decimal


def decimal_str(value: Decimal | None) -> str | None:
    """'1.5', '100', '0.000001' - no exponent, no trailing zeros."""
    if value is None:
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
