"""What must hold after any crash, read straight from the deployment's PostgreSQL.

The promise (README, Reliability): every accepted order ends `confirmed` or `failed`
with an error code, none is filled twice, and every event log is gapless with one
terminal event, last. "Accepted" is every order the API answered 201 for, plus every
order stored whose answer was lost (the API died between the commit and the 201).

"Filled" is read from the simulated chain, not from the engine: a swap is a row of
`sim_transactions`, sent under the client transaction id `<venue>:<order id>:<attempt>`
(venues/simvenue.py), and it filled when it landed `confirmed` (venues/chain/ledger.py).
An order is filled once when exactly one such row is confirmed and the order says
`confirmed` with that row's signature as its txHash; a `failed` order has none.

Used by the crash matrix (tests/e2e/test_crash_matrix.py) and `bench soak`.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

Query = Callable[..., list[tuple]]   # query(sql, *params) -> rows
TERMINAL = {"confirmed", "failed", "cancelled"}


@dataclass
class Audit:
    accepted: int = 0                       # 201s plus orders stored whose answer was lost
    answered: int = 0                       # of those, the ones the client got a 201 for
    statuses: collections.Counter = field(default_factory=collections.Counter)
    failed_by_code: collections.Counter = field(default_factory=collections.Counter)
    lost: list[str] = field(default_factory=list)            # a 201 with no order stored
    unfinished: dict[str, str] = field(default_factory=dict)  # order -> its non-terminal status
    filled_twice: dict[str, list[str]] = field(default_factory=dict)
    wrong_fill: dict[str, str] = field(default_factory=dict)  # order -> what is wrong
    bad_logs: dict[str, str] = field(default_factory=dict)    # order -> what is wrong
    no_reason: list[str] = field(default_factory=list)        # failed without error.code
    refused_but_stored: dict[str, str] = field(default_factory=dict)  # clientOrderId answered 503 -> status

    @property
    def problems(self) -> dict[str, Any]:
        found = {"lost": self.lost, "unfinished": self.unfinished, "filled twice": self.filled_twice,
                 "fill does not match the order": self.wrong_fill, "event log": self.bad_logs,
                 "failed without a code": self.no_reason,
                 "answered 503 but stored": self.refused_but_stored}
        return {k: v for k, v in found.items() if v}

    def summary(self) -> str:
        return (f"{self.accepted} accepted ({self.answered} answered 201), "
                f"{dict(self.statuses)}, failed by code {dict(self.failed_by_code)}")


def unfinished(query: Query, answered: Iterable[str]) -> int:
    """How many accepted orders are not terminal yet (an answered id not stored counts)."""
    ids = set(answered)
    rows = query("SELECT id, status FROM orders")
    stored = {i for i, _ in rows}
    return sum(1 for _, s in rows if s not in TERMINAL) + len(ids - stored)


def audit(query: Query, answered: Iterable[str], refused: Iterable[str] = ()) -> Audit:
    """Check every order of the deployment against the promise; see `Audit.problems`.
    `refused`: the clientOrderIds of POSTs answered 503, of which nothing may be stored."""
    answered = set(answered)
    result = Audit(answered=len(answered))
    orders = {row[0]: row for row in query(
        "SELECT id, status, tx_hash, error->>'code', last_seq FROM orders")}
    refused = list(refused)
    if refused:
        result.refused_but_stored = dict(query(
            "SELECT client_order_id, status FROM orders WHERE client_order_id = ANY(%s)", refused))
    result.lost = sorted(answered - set(orders))
    result.accepted = len(set(orders) | answered)
    fills = collections.defaultdict(list)
    for client_tx_id, signature in query(
            "SELECT client_tx_id, signature FROM sim_transactions WHERE status = 'confirmed'"):
        fills[client_tx_id.split(":")[1]].append(signature)
    logs = collections.defaultdict(list)
    for order_id, seq, status in query("SELECT order_id, seq, status FROM order_events ORDER BY order_id, seq"):
        logs[order_id].append((seq, status))

    for order_id, (_, status, tx_hash, code, last_seq) in orders.items():
        result.statuses[status] += 1
        if status not in TERMINAL:
            result.unfinished[order_id] = status
        if status == "failed":
            result.failed_by_code[code] += 1
            if not code:
                result.no_reason.append(order_id)
        filled = fills.get(order_id, [])
        if len(filled) > 1:
            result.filled_twice[order_id] = filled
        elif status == "confirmed" and filled != [tx_hash]:
            result.wrong_fill[order_id] = f"confirmed with txHash {tx_hash}, chain fills {filled}"
        elif status != "confirmed" and filled:
            result.wrong_fill[order_id] = f"{status}, but the chain filled {filled}"
        problem = _log_problem(logs.get(order_id, []), status, last_seq)
        if problem:
            result.bad_logs[order_id] = problem
    return result


def _log_problem(events: list[tuple[int, str]], status: str, last_seq: int) -> str | None:
    seqs = [seq for seq, _ in events]
    statuses = [s for _, s in events]
    if seqs != list(range(1, len(seqs) + 1)) or len(seqs) != last_seq:
        return f"seqs {seqs}, last_seq {last_seq}"
    if not statuses or statuses[0] != "pending":
        return f"does not start with pending: {statuses}"
    terminal = [s for s in statuses if s in TERMINAL]
    if status in TERMINAL and (terminal != [status] or statuses[-1] != status):
        return f"terminal events {terminal} for a {status} order: {statuses}"
    return None
