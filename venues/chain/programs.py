"""The programs deployed on the chain: each pool is run by one, by name.

A program is a pure swap function over a JSON-able state,
`swap(state, a_to_b, amount_in) -> (amount_out, fee, new_state)`; one with a mid
price (B base units per A base unit) also takes part in the simulated market.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from venues import cpmm, dlmm

Program = Callable[[dict[str, Any], bool, int], tuple[int, int, dict[str, Any]]]
MidPrice = Callable[[dict[str, Any]], Decimal]

_PROGRAMS: dict[str, Program] = {"cpmm": cpmm.swap, "dlmm": dlmm.swap}
_MIDS: dict[str, MidPrice] = {"cpmm": cpmm.mid_price, "dlmm": dlmm.mid_price}


class UnknownPool(LookupError):
    """No pool with this id (or not run by this program) is on the chain."""


def register_program(name: str, swap: Program, mid_price: MidPrice | None = None) -> None:
    """Make a pool program known to the chain; it must be registered in every
    process that may land its transactions (a process lands only the pools whose
    program it knows). With `mid_price` its pools take part in the market's moves."""
    _PROGRAMS[name] = swap
    if mid_price is not None:
        _MIDS[name] = mid_price


def program(name: str) -> Program:
    """The swap function of program `name`; UnknownPool if it is not deployed here."""
    try:
        return _PROGRAMS[name]
    except KeyError:
        raise UnknownPool(f"no program {name!r} is deployed on this chain") from None


def is_known(name: str) -> bool:
    return name in _PROGRAMS


def mid_price_of(name: str) -> MidPrice | None:
    """The program's mid price, or None when its pools stay out of the market."""
    return _MIDS.get(name)
