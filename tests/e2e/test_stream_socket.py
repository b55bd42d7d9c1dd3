"""GET /api/orders/stream through gunicorn (two API processes) with two workers:
one socket submits and follows many orders, each event once and in order."""
from __future__ import annotations

import json
import time

import pytest
from websockets.sync.client import connect

from tests.e2e.harness import ORDER
from tests.e2e.test_production import Stack

pytestmark = pytest.mark.e2e

TERMINAL = {"confirmed", "failed", "cancelled"}


@pytest.fixture
def deployment(pg_url, harness, private_redis_url):
    stack = Stack(harness, pg_url, private_redis_url, MOCK_EXEC_LATENCY_MS=300, WORKER_CONCURRENCY=4)
    stack.worker()
    stack.worker()
    return stack


def read_until(ws, done, timeout: float = 60) -> list[dict]:
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"the stream did not finish within {timeout} s; last messages {messages[-5:]}")
        try:
            messages.append(json.loads(ws.recv(timeout=remaining)))
        except TimeoutError:
            continue
    return messages


def finished(order_ids):
    def done(messages) -> bool:
        ended = {m["orderId"] for m in messages if m.get("status") in TERMINAL}
        return set(order_ids) <= ended
    return done


def test_one_socket_submits_and_follows_many_orders_across_processes(deployment):
    posted = [deployment.api.post_order() for _ in range(10)]  # taken in by either API process
    url = deployment.api.ws_url + "/api/orders/stream"
    with connect(url, open_timeout=10, close_timeout=5, proxy=None) as ws:
        for i in range(10):
            ws.send(json.dumps({"action": "submit", "order": ORDER, "requestId": f"s{i}"}))
        for order_id in posted:
            ws.send(json.dumps({"action": "subscribe", "orderId": order_id, "requestId": order_id}))
        ws.send("not json")
        accepted: list[str] = []

        def all_done(messages) -> bool:
            accepted[:] = [m["orderId"] for m in messages if m.get("type") == "accepted"]
            return len(accepted) == 10 and finished(accepted + posted)(messages)

        messages = read_until(ws, all_done)
    replies = {m["requestId"]: m for m in messages if "requestId" in m}
    assert {f"s{i}" for i in range(10)} <= set(replies)
    assert all(replies[o]["type"] == "subscribed" for o in posted)
    assert [m["error"]["code"] for m in messages if m.get("type") == "error"] == ["VALIDATION_ERROR"]
    for order_id in accepted + posted:
        events = [m for m in messages if m.get("orderId") == order_id and "seq" in m]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), order_id
        assert events[0]["status"] == "pending" and events[-1]["status"] == "confirmed"


def test_a_cancelled_order_shows_its_cancelled_event_on_the_stream(pg_url, harness, private_redis_url):
    stack = Stack(harness, pg_url, private_redis_url)  # no worker: the order stays pending
    order_id = stack.api.post_order()
    with connect(stack.api.ws_url + "/api/orders/stream", open_timeout=10, proxy=None) as ws:
        ws.send(json.dumps({"action": "subscribe", "orderId": order_id}))
        read_until(ws, lambda ms: any(m.get("seq") == 1 for m in ms), timeout=20)
        response = stack.api.http.post(f"{stack.api.base_url}/api/orders/{order_id}/cancel", timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        messages = read_until(ws, finished([order_id]), timeout=20)
    assert [m["status"] for m in messages if "seq" in m] == ["cancelled"]
