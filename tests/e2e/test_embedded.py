"""`orderengine serve` (API + WebSocket + worker in one process, on SQLite) as a user runs it."""
from __future__ import annotations

import sqlite3
import uuid
from decimal import Decimal

import pytest

from tests.e2e.harness import Harness, clean_environ, free_port

pytestmark = pytest.mark.e2e

LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]


def serve_env(tmp_path, **values) -> dict[str, str]:
    return clean_environ(PORT=free_port(), DATABASE_URL=f"sqlite:///{tmp_path}/orderengine.db", **values)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One embedded server shared by the tests that only read from it; confirmation takes
    about a second, so a socket opened right after the POST sees the end of the order live."""
    tmp_path = tmp_path_factory.mktemp("embedded")
    harness = Harness(tmp_path)
    try:
        yield harness.serve(serve_env(tmp_path, MOCK_EXEC_LATENCY_MS=1000))
    finally:
        harness.close()


def test_order_streams_its_whole_lifecycle_over_the_websocket_then_closes_normally(server):
    order_id = server.post_order(amountIn="1.5", slippageBps=75)

    messages, code = server.read_socket(f"orderId={order_id}")

    assert [m["status"] for m in messages] == LIFECYCLE
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    assert {m["orderId"] for m in messages} == {order_id}
    assert code == 1000
    snapshot = server.order(order_id)
    confirmed = messages[-1]["data"]
    assert snapshot["status"] == "confirmed"
    assert snapshot["amountOut"] == confirmed["amountOut"] and Decimal(snapshot["amountOut"]) > 0
    assert snapshot["executedPrice"] == confirmed["executedPrice"] and Decimal(snapshot["executedPrice"]) > 0
    assert snapshot["txHash"] == confirmed["txHash"] == messages[3]["data"]["txHash"]
    assert snapshot["venue"] == confirmed["venue"] in {"raydium", "meteora"}


def test_building_event_holds_a_quote_per_venue_and_the_slippage_floor(server):
    order_id = server.post_order(amountIn="2", slippageBps=100)
    server.wait_for_status([order_id], {"confirmed"}, timeout=20)

    building = next(e for e in server.events(order_id) if e["status"] == "building")["data"]

    quotes = {q["venue"]: q for q in building["quotes"]}
    assert set(quotes) == {"raydium", "meteora"}
    for quote in quotes.values():
        assert Decimal(quote["priceImpactPct"]) >= 0
        assert Decimal(quote["amountOut"]) > 0
    assert building["venue"] == max(quotes.values(), key=lambda q: Decimal(q["netOut"]))["venue"]
    expected = Decimal(building["expectedOut"])
    floor = expected * (1 - Decimal(100) / 10_000)
    assert floor - Decimal("0.000001") < Decimal(building["minAmountOut"]) <= floor


def test_socket_opened_after_the_order_finished_replays_every_event_then_closes_normally(server):
    order_id = server.post_order()
    server.wait_for_status([order_id], {"confirmed"}, timeout=20)

    messages, code = server.read_socket(f"orderId={order_id}")

    assert [m["status"] for m in messages] == LIFECYCLE
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    assert code == 1000


def test_socket_with_since_replays_only_the_later_events(server):
    order_id = server.post_order()
    server.wait_for_status([order_id], {"confirmed"}, timeout=20)

    messages, code = server.read_socket(f"orderId={order_id}&since=3")

    assert [(m["seq"], m["status"]) for m in messages] == [(4, "submitted"), (5, "confirmed")]
    assert code == 1000


@pytest.mark.parametrize("query, close_code, error_code", [
    ("", 4400, "VALIDATION_ERROR"),
    ("orderId=not-a-uuid", 4400, "VALIDATION_ERROR"),
    ("orderId=12345678-1234-1234-1234-1234567890zz", 4400, "VALIDATION_ERROR"),
    (f"orderId={uuid.uuid4()}", 4404, "ORDER_NOT_FOUND"),
], ids=["missing", "malformed", "not-hex", "unknown"])
def test_socket_for_a_missing_malformed_or_unknown_order_gets_an_error_then_its_close_code(
        server, query, close_code, error_code):
    messages, code = server.read_socket(query, timeout=10)

    assert len(messages) == 1 and set(messages[0]) == {"error"}
    assert messages[0]["error"]["code"] == error_code
    assert messages[0]["error"]["message"]
    assert code == close_code


def test_orders_in_flight_when_serve_is_killed_are_confirmed_after_a_restart_and_filled_once(
        harness, tmp_path):
    env = serve_env(tmp_path, MOCK_EXEC_LATENCY_MS=3000)
    database = tmp_path / "orderengine.db"
    first = harness.serve(env)
    order_ids = [first.post_order(amountIn=str(Decimal("0.5") + i)) for i in range(5)]
    first.wait_for_event(order_ids, "submitted", timeout=10)

    first.proc.kill()

    assert _statuses(database, order_ids) == {i: "submitted" for i in order_ids}, \
        "the kill came too late: the orders were no longer in flight"
    second = harness.serve(dict(env, PORT=str(free_port())))
    snapshots = second.wait_for_status(order_ids, {"confirmed", "failed"}, timeout=30)
    assert {i: s["status"] for i, s in snapshots.items()} == {i: "confirmed" for i in order_ids}
    confirmed = _confirmed_txs(database)
    for order_id in order_ids:
        assert len(confirmed.get(order_id, [])) == 1, f"order {order_id} filled {confirmed.get(order_id)}"
        assert confirmed[order_id][0] == snapshots[order_id]["txHash"]
        assert [e["seq"] for e in second.events(order_id)] == list(range(1, len(second.events(order_id)) + 1))


def _statuses(database, order_ids) -> dict[str, str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute(f"SELECT id, status FROM orders WHERE id IN ({','.join('?' * len(order_ids))})",
                            order_ids).fetchall()
    return dict(rows)


def _confirmed_txs(database) -> dict[str, list[str]]:
    """order id -> signatures of its confirmed transactions on the simulated chain
    (client tx ids are `<venue>:<order id>:<attempt>`)."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT client_tx_id, signature FROM sim_transactions "
                            "WHERE status = 'confirmed'").fetchall()
    filled: dict[str, list[str]] = {}
    for client_tx_id, signature in rows:
        filled.setdefault(client_tx_id.split(":")[1], []).append(signature)
    return filled
