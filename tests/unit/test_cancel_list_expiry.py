"""Cancel, the order list, and expiry (ORDER_TTL_MS): the client protocol's rules, in-process."""
import datetime as dt
import logging

import pytest

from orderengine.app import create_app
from orderengine.clock import utcnow
from orderengine.lifecycle import Status
from orderengine.runtime import Runtime
from orderengine.schemas import decode_cursor, encode_cursor
from orderengine.worker import EmbeddedWorker
from tests.fakes import FakeVenue, registry_of
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal
from tests.unit.test_api import post


def place(client, **fields) -> str:
    response = post(client, {**SOL_USDC, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["orderId"]


def statuses(runtime, order_id):
    return [e.status.value for e in runtime.store.events(order_id)]


# --- cancel ---------------------------------------------------------------------------

def test_a_pending_order_is_cancelled_with_a_terminal_event_and_never_sent(client, runtime, venues):
    order_id = place(client)  # no worker runs: it stays pending
    response = client.post(f"/api/orders/{order_id}/cancel")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    events = runtime.store.events(order_id)
    assert [e.status.value for e in events] == ["pending", "cancelled"]
    assert events[-1].data["reason"] and events[-1].terminal
    assert venues[0].executions == venues[1].executions == 0


def test_cancelling_an_order_twice_answers_200_again_and_changes_nothing(client, runtime):
    order_id = place(client)
    first = client.post(f"/api/orders/{order_id}/cancel")
    second = client.post(f"/api/orders/{order_id}/cancel")
    assert first.status_code == second.status_code == 200
    assert second.get_json() == first.get_json()
    assert statuses(runtime, order_id) == ["pending", "cancelled"]


def test_an_order_that_reached_building_is_not_cancellable(client, runtime, worker):
    order_id = place(client)
    wait_terminal(runtime, order_id)
    response = client.post(f"/api/orders/{order_id}/cancel")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "NOT_CANCELLABLE"
    assert runtime.store.get(order_id).status == "confirmed"


def test_cancelling_an_unknown_or_malformed_order_is_a_clear_4xx(client):
    assert client.post("/api/orders/00000000-0000-4000-8000-000000000000/cancel").status_code == 404
    assert client.post("/api/orders/not-a-uuid/cancel").status_code == 400


def test_a_cancel_that_wins_the_race_with_routing_means_nothing_is_sent(start_engine, caplog):
    caplog.set_level(logging.INFO, logger="orderengine.execution")
    slow = FakeVenue("slow", quote_delay=1.0)
    rt = start_engine(slow, quote_timeout_ms=10_000)
    client = create_app(rt.settings, runtime=rt).test_client()
    order_id = place(client)
    wait_for(lambda: rt.store.get(order_id).status == "routing")  # quotes are on their way
    assert client.post(f"/api/orders/{order_id}/cancel").status_code == 200
    # the quotes come back to an order that moved on: the worker's `building` write loses
    wait_for(lambda: any("moved on without this step" in r.getMessage() for r in caplog.records))
    assert statuses(rt, order_id) == ["pending", "routing", "cancelled"]
    assert slow.executions == 0


# --- list -------------------------------------------------------------------------------

def test_the_list_is_newest_first_and_pages_never_repeat_or_skip_while_orders_arrive(client):
    first_batch = [place(client, clientOrderId=f"a{i}") for i in range(7)]
    seen, before = [], None
    while True:
        query = "?limit=3" + (f"&before={before}" if before else "")
        body = client.get("/api/orders" + query).get_json()
        seen += [o["orderId"] for o in body["orders"]]
        place(client, clientOrderId="arrived-while-paging")  # new orders land at the head
        before = body["next"]
        if before is None:
            break
    assert seen == list(reversed(first_batch))


def test_the_list_filters_by_status_and_client_order_id(client, runtime):
    keep = place(client, clientOrderId="bot-7")
    cancelled = place(client, clientOrderId="bot-8")
    client.post(f"/api/orders/{cancelled}/cancel")
    by_status = client.get("/api/orders?status=cancelled").get_json()["orders"]
    by_client_id = client.get("/api/orders?clientOrderId=bot-7").get_json()["orders"]
    assert [o["orderId"] for o in by_status] == [cancelled]
    assert [o["orderId"] for o in by_client_id] == [keep]
    assert by_client_id[0]["clientOrderId"] == "bot-7" and by_client_id[0]["status"] == "pending"


@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("status=done", "status"),
    ("before=bm90LWEtY3Vyc29y", "before"), ("clientOrderId=" + "x" * 65, "clientOrderId"),
    ("page=2", "_schema"),
])
def test_a_bad_list_query_is_a_400_naming_the_argument(client, query, field):
    response = client.get(f"/api/orders?{query}")
    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]


def test_a_cursor_round_trips_and_is_opaque():
    moment = dt.datetime(2026, 11, 26, 7, 0, 0, 123456, tzinfo=dt.timezone.utc)
    order_id = "00000000-0000-4000-8000-000000000000"
    cursor = encode_cursor(moment, order_id)
    assert order_id not in cursor and decode_cursor(cursor) == (moment, order_id)


# --- expiry -------------------------------------------------------------------------------

def test_an_order_held_back_by_the_throttle_past_its_ttl_expires_and_is_never_sent(start_engine):
    venue = FakeVenue("alpha")
    rt = start_engine(venue, max_orders_per_minute=1, order_ttl_ms=1000)
    client = create_app(rt.settings, runtime=rt).test_client()
    ids = [place(client), place(client)]
    rows = [wait_terminal(rt, i, timeout=10) for i in ids]
    assert sorted(r.status for r in rows) == ["confirmed", "failed"]
    expired = next(r for r in rows if r.status == "failed")
    assert expired.error["code"] == "EXPIRED"
    assert statuses(rt, expired.id) == ["pending", "failed"]
    # within 2 s of its deadline
    assert expired.updated_at - expired.created_at < dt.timedelta(milliseconds=1000 + 2000)
    assert venue.executions == 1


def test_an_order_whose_quotes_come_back_after_its_ttl_is_never_sent(start_engine):
    venue = FakeVenue("slow", quote_delay=1.5)
    rt = start_engine(venue, order_ttl_ms=1000, quote_timeout_ms=10_000)
    row = wait_terminal(rt, place(create_app(rt.settings, runtime=rt).test_client()), timeout=10)
    assert row.status == "failed" and row.error["code"] == "EXPIRED"
    assert statuses(rt, row.id) == ["pending", "routing", "failed"]
    assert venue.executions == 0


def test_an_order_no_worker_started_before_its_ttl_expires_when_one_starts(client, runtime, venues):
    runtime_ttl = runtime.settings.replace(order_ttl_ms=1000)
    order_id = place(client)
    created = runtime.store.get(order_id).created_at
    wait_for(lambda: utcnow() > created + dt.timedelta(milliseconds=1000))  # the deadline passes
    rt = Runtime(runtime_ttl, registry=registry_of(*venues))
    worker = EmbeddedWorker(rt)
    worker.start()
    try:
        row = wait_terminal(rt, order_id)
    finally:
        worker.stop()
    assert (row.status, row.error["code"]) == ("failed", "EXPIRED")
    assert Status(row.status) is Status.FAILED and venues[0].executions == venues[1].executions == 0
