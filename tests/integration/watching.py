"""How an integration test watches the engine: poll the database against a
deadline (never a blind sleep), and read an order the way a user sees it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

import sqlalchemy as sa

from orderengine.models import order_events, orders
from orderengine.schemas import OrderRequest, parse_order_request

T = TypeVar("T")

HAPPY_PATH = ["pending", "routing", "building", "submitted", "confirmed"]


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str | None = None) -> T:
    """Poll until `predicate()` is truthy and return its value; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def holds_for(predicate: Callable[[], bool], duration: float, interval: float = 0.05,
              what: str | None = None) -> None:
    """Fail as soon as `predicate()` is false within `duration`: for things that must not happen."""
    deadline = time.monotonic() + duration
    while True:
        assert predicate(), f"stopped holding: {what or predicate}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def order_body(**overrides: Any) -> dict[str, Any]:
    """The JSON a client POSTs to /api/orders/execute."""
    body = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "slippageBps": 50}
    body.update(overrides)
    return body


def order_request(**overrides: Any) -> OrderRequest:
    return parse_order_request(order_body(**overrides))


def post_order(client, **overrides: Any) -> str:
    response = client.post("/api/orders/execute", json=order_body(**overrides))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["orderId"]


def statuses_by_order(engine: sa.Engine, order_ids: list[str] | None = None) -> dict[str, str]:
    query = sa.select(orders.c.id, orders.c.status)
    if order_ids is not None:
        query = query.where(orders.c.id.in_(order_ids))
    with engine.connect() as conn:
        return {row.id: row.status for row in conn.execute(query)}


def status_of(engine: sa.Engine, order_id: str) -> str | None:
    return statuses_by_order(engine, [order_id]).get(order_id)


def all_final(engine: sa.Engine, order_ids: list[str]) -> bool:
    found = statuses_by_order(engine, order_ids)
    return len(found) == len(order_ids) and all(s in ("confirmed", "failed", "cancelled") for s in found.values())


def logged_seqs(engine: sa.Engine) -> dict[str, list[int]]:
    """Every order's event seqs, as stored, in seq order."""
    query = sa.select(order_events.c.order_id, order_events.c.seq).order_by(
        order_events.c.order_id, order_events.c.seq)
    seqs: dict[str, list[int]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            seqs.setdefault(row.order_id, []).append(row.seq)
    return seqs
