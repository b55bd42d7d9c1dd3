"""The order state machine: statuses and the transitions allowed between them.

This table is the only place that says which status may follow which; the
store refuses anything else, and terminal statuses never change.
"""
from __future__ import annotations

import enum


class Status(str, enum.Enum):
    PENDING = "pending"
    ROUTING = "routing"
    BUILDING = "building"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


TRANSITIONS: dict[Status | None, frozenset[Status]] = {
    None: frozenset({Status.PENDING}),
    # pending -> failed: it expired (ORDER_TTL_MS) before a worker started it.
    # -> cancelled only before the swap is built: after that it may be on its way to the venue.
    Status.PENDING: frozenset({Status.ROUTING, Status.FAILED, Status.CANCELLED}),
    # A cancel that wins the race with the worker's routing decision: the worker's
    # `building` write then finds the order moved on, and nothing is sent.
    Status.ROUTING: frozenset({Status.BUILDING, Status.RETRYING, Status.FAILED, Status.CANCELLED}),
    # Once built, the swap may have been sent: the executor leaves `building` for a retry
    # or a failure only when the venue refused the send AND says it never received it.
    Status.BUILDING: frozenset({Status.SUBMITTED, Status.RETRYING, Status.FAILED}),
    Status.SUBMITTED: frozenset({Status.CONFIRMED, Status.RETRYING, Status.FAILED}),
    Status.RETRYING: frozenset({Status.ROUTING, Status.FAILED, Status.CANCELLED}),
    Status.CONFIRMED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}

TERMINAL: frozenset[Status] = frozenset(s for s, nxt in TRANSITIONS.items() if s and not nxt)
ACTIVE: frozenset[Status] = frozenset(Status) - TERMINAL


class IllegalTransition(Exception):
    def __init__(self, current: Status | None, target: Status) -> None:
        super().__init__(f"an order in {current} cannot become {target}")
        self.current, self.target = current, target


def check_transition(current: Status | str | None, target: Status | str) -> Status:
    """Return `target` as a Status if it may follow `current`, else raise."""
    cur = Status(current) if current is not None else None
    tgt = Status(target)
    if tgt not in TRANSITIONS[cur]:
        raise IllegalTransition(cur, tgt)
    return tgt


def is_terminal(status: Status | str) -> bool:
    return Status(status) in TERMINAL
