"""The HTTP API through the app factory: answers, and clear 4xx for bad input."""
import json

import pytest
import sqlalchemy as sa

from orderengine.models import orders
from tests.unit.conftest import SOL_USDC, wait_terminal

UUID_0 = "00000000-0000-4000-8000-000000000000"


def order_count(runtime):
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar()


def post(client, body, **kw):
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    kw.setdefault("content_type", "application/json")
    return client.post("/api/orders/execute", data=body, **kw)


def test_post_creates_a_pending_order_with_its_location(client, runtime):
    resp = post(client, {**SOL_USDC, "slippageBps": 100, "clientOrderId": "bot-1"})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["status"] == "pending"
    assert resp.headers["Location"] == f"/api/orders/{body['orderId']}"
    snap = client.get(resp.headers["Location"]).get_json()
    assert snap["clientOrderId"] == "bot-1" and snap["slippageBps"] == 100 and snap["amountIn"] == "1"


def test_the_snapshot_has_every_documented_field_and_decimal_strings(client, runtime, worker):
    order_id = post(client, {**SOL_USDC, "amountIn": 2.5}).get_json()["orderId"]
    wait_terminal(runtime, order_id)
    snap = client.get(f"/api/orders/{order_id}").get_json()
    assert set(snap) == {"orderId", "type", "tokenIn", "tokenOut", "amountIn", "slippageBps", "clientOrderId",
                         "status", "attempts", "venue", "txHash", "amountOut", "executedPrice", "error",
                         "createdAt", "updatedAt"}
    assert snap["amountIn"] == "2.5" and isinstance(snap["amountOut"], str)
    assert snap["createdAt"].endswith("Z")


def test_events_come_in_seq_order_and_since_filters_them(client, runtime, worker):
    order_id = post(client, SOL_USDC).get_json()["orderId"]
    wait_terminal(runtime, order_id)
    events = client.get(f"/api/orders/{order_id}/events").get_json()
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in client.get(f"/api/orders/{order_id}/events?since=3").get_json()] == [4, 5]


BAD_BODIES = {
    "missing type": {k: v for k, v in SOL_USDC.items() if k != "type"},
    "limit order": {**SOL_USDC, "type": "LIMIT"},
    "lower-case type": {**SOL_USDC, "type": "market"},
    "unknown tokenIn": {**SOL_USDC, "tokenIn": "DOGE"},
    "missing tokenOut": {k: v for k, v in SOL_USDC.items() if k != "tokenOut"},
    "same token twice": {**SOL_USDC, "tokenOut": "SOL"},
    "token not a string": {**SOL_USDC, "tokenIn": 5},
    "missing amount": {k: v for k, v in SOL_USDC.items() if k != "amountIn"},
    "zero amount": {**SOL_USDC, "amountIn": 0},
    "negative amount": {**SOL_USDC, "amountIn": "-1"},
    "boolean amount": {**SOL_USDC, "amountIn": True},
    "amount as words": {**SOL_USDC, "amountIn": "one"},
    "NaN amount": {**SOL_USDC, "amountIn": "NaN"},
    "too many decimals": {**SOL_USDC, "amountIn": "0.0000000001"},
    "amount over u64": {**SOL_USDC, "amountIn": "18446744074"},
    "amount null": {**SOL_USDC, "amountIn": None},
    "slippage negative": {**SOL_USDC, "slippageBps": -1},
    "slippage over 100%": {**SOL_USDC, "slippageBps": 10001},
    "slippage fractional": {**SOL_USDC, "slippageBps": 1.5},
    "clientOrderId too long": {**SOL_USDC, "clientOrderId": "x" * 65},
    "unknown field": {**SOL_USDC, "side": "buy"},
    "array body": [SOL_USDC],
    "string body": json.dumps("hello"),
    "number body": "42",
}


@pytest.mark.parametrize("name", BAD_BODIES)
def test_bad_orders_get_a_400_naming_the_problem_and_store_nothing(client, runtime, name):
    resp = post(client, BAD_BODIES[name])
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["message"] and error["fields"]
    assert order_count(runtime) == 0


def test_nan_and_infinity_literals_are_not_amounts(client, runtime):
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        resp = post(client, '{"type":"MARKET","tokenIn":"SOL","tokenOut":"USDC","amountIn":%s}' % literal)
        assert resp.status_code == 400, literal
    assert order_count(runtime) == 0


def test_an_amount_with_a_vast_exponent_is_a_400_at_once(client, runtime):
    resp = post(client, '{"type":"MARKET","tokenIn":"SOL","tokenOut":"USDC","amountIn":1e300000000}')
    assert resp.status_code == 400 and "too large" in json.dumps(resp.get_json())


def test_a_lone_surrogate_in_client_order_id_is_a_400(client, runtime):
    resp = post(client, '{"type":"MARKET","tokenIn":"SOL","tokenOut":"USDC","amountIn":1,"clientOrderId":"\\ud800"}')
    assert resp.status_code == 400 and "clientOrderId" in resp.get_json()["error"]["fields"]
    assert order_count(runtime) == 0


def test_a_huge_json_number_is_a_400_not_a_crash(client, runtime):
    resp = post(client, '{"type":"MARKET","tokenIn":"SOL","tokenOut":"USDC","amountIn":%s}' % ("9" * 5000))
    assert resp.status_code == 400


@pytest.mark.parametrize("body,ctype", [
    ("type=MARKET", "application/x-www-form-urlencoded"),
    (json.dumps(SOL_USDC), "text/plain"),
    ("{not json", "application/json"),
    ("", "application/json"),
    (b"\xff\xfe", "application/json"),
    ("[" * 5000 + "]" * 5000, "application/json"),
])
def test_a_body_that_is_not_json_is_a_415(client, runtime, body, ctype):
    resp = post(client, body, content_type=ctype)
    assert resp.status_code == 415
    assert resp.get_json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert order_count(runtime) == 0


def test_a_body_over_64_kib_is_a_413(client, runtime):
    resp = post(client, {**SOL_USDC, "clientOrderId": "x" * 70_000})
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_an_unknown_order_is_a_404(client):
    resp = client.get(f"/api/orders/{UUID_0}")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "ORDER_NOT_FOUND"
    assert client.get(f"/api/orders/{UUID_0}/events").status_code == 404


@pytest.mark.parametrize("path", ["/api/orders/not-a-uuid", "/api/orders/1/events",
                                  f"/api/orders/{UUID_0}/events?since=-1", f"/api/orders/{UUID_0}/events?since=x"])
def test_a_malformed_id_or_since_is_a_400(client, path):
    resp = client.get(path)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_wrong_method_is_a_405_in_json(client):
    resp = client.delete("/api/orders/execute")
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in resp.headers["Allow"]


def test_an_unknown_path_is_a_404_in_json(client):
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "NOT_FOUND"


def test_plain_http_on_the_websocket_address_says_how_to_connect(client):
    resp = client.get("/api/orders/execute?orderId=" + UUID_0)
    assert resp.status_code == 426 and "WebSocket" in resp.get_json()["error"]["message"]


def test_health_is_ok_when_the_database_answers(client):
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "ok" and resp.get_json()["checks"]["database"]["ok"]


def test_health_is_503_naming_the_database_when_it_is_gone(client, runtime):
    runtime.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/gone",
                                      connect_args={"connect_timeout": 1})
    resp = client.get("/health")
    assert resp.status_code == 503 and resp.get_json()["failing"] == ["database"]


def test_venues_lists_each_venue_with_its_pools_and_fees(client):
    venues = client.get("/api/venues").get_json()["venues"]
    assert [v["name"] for v in venues] == ["alpha", "beta"]
    assert venues[0]["pools"][0]["feePct"] == "0.25"
