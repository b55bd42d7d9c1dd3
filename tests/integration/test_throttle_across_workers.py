"""MAX_ORDERS_PER_MINUTE=2 with two workers: what a user sees of the third and fourth order."""
from __future__ import annotations

import pytest

from orderengine.app import create_app
from tests.integration.watching import holds_for, post_order, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def client(fleet, settings):
    limited = dict(max_orders_per_minute=2)
    api = fleet.runtime(**limited)
    fleet.worker(api)
    fleet.worker(fleet.runtime(**limited))
    return create_app(settings.replace(**limited), runtime=api).test_client()


def seen_statuses(client, order_ids: list[str]) -> dict[str, str]:
    return {oid: client.get(f"/api/orders/{oid}").get_json()["status"] for oid in order_ids}


def test_only_two_of_four_orders_start_within_the_minute_across_two_workers(client):
    order_ids = [post_order(client, clientOrderId=f"throttled-{i}") for i in range(4)]

    def started() -> list[str]:
        return [oid for oid, s in seen_statuses(client, order_ids).items() if s != "pending"]

    wait_for(lambda: len(started()) >= 2, timeout=10, what="two orders to start")
    holds_for(lambda: len(started()) == 2, duration=2.0, what="only two orders started")

    statuses = seen_statuses(client, order_ids)
    waiting = [oid for oid, s in statuses.items() if s == "pending"]
    assert len(waiting) == 2
    for oid in waiting:
        snapshot = client.get(f"/api/orders/{oid}").get_json()
        assert snapshot["attempts"] == 0
        events = client.get(f"/api/orders/{oid}/events").get_json()
        assert [e["status"] for e in events] == ["pending"]
    for oid in set(order_ids) - set(waiting):
        events = client.get(f"/api/orders/{oid}/events").get_json()
        assert [e["status"] for e in events][:2] == ["pending", "routing"]
