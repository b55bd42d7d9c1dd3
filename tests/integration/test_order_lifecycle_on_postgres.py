"""One order, end to end in this process: HTTP in, Huey over Redis, the worker, PostgreSQL."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tests.integration.watching import HAPPY_PATH, post_order, status_of, wait_for

pytestmark = pytest.mark.integration

DECIMAL_STRING = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")
AMOUNT_IN = "0.123456789"  # all nine of SOL's decimals: a float would not keep them


@pytest.fixture
def confirmed_order(client, worker, runtime) -> str:
    order_id = post_order(client, amountIn=AMOUNT_IN)
    wait_for(lambda: status_of(runtime.engine, order_id) == "confirmed", timeout=15,
             what="the order to be confirmed")
    return order_id


def test_a_posted_order_is_logged_pending_to_confirmed_with_seq_one_to_five(client, confirmed_order):
    events = client.get(f"/api/orders/{confirmed_order}/events").get_json()
    assert [(e["seq"], e["status"]) for e in events] == list(enumerate(HAPPY_PATH, start=1))
    assert all(e["orderId"] == confirmed_order for e in events)
    assert [e["attempt"] for e in events] == [0, 1, 1, 1, 1]


def test_the_confirmed_snapshot_shows_amounts_as_decimal_strings(client, confirmed_order):
    snapshot = client.get(f"/api/orders/{confirmed_order}").get_json()
    assert snapshot["status"] == "confirmed"
    assert snapshot["amountIn"] == AMOUNT_IN
    for field in ("amountIn", "amountOut", "executedPrice"):
        value = snapshot[field]
        assert isinstance(value, str) and DECIMAL_STRING.match(value), (field, value)
    confirmed = client.get(f"/api/orders/{confirmed_order}/events").get_json()[-1]["data"]
    assert (confirmed["amountOut"], confirmed["executedPrice"], confirmed["txHash"]) == (
        snapshot["amountOut"], snapshot["executedPrice"], snapshot["txHash"])


def test_the_fill_respects_the_minimum_the_building_event_announced(client, confirmed_order):
    events = client.get(f"/api/orders/{confirmed_order}/events").get_json()
    decision = events[2]["data"]
    expected, floor = Decimal(decision["expectedOut"]), Decimal(decision["minAmountOut"])
    assert floor <= expected * (1 - Decimal(50) / Decimal(10_000))
    assert Decimal(events[-1]["data"]["amountOut"]) >= floor


def test_amounts_are_stored_as_exact_numerics(client, runtime, confirmed_order):
    snapshot = client.get(f"/api/orders/{confirmed_order}").get_json()
    with runtime.engine.connect() as conn:  # raw SQL: what psycopg hands back, not our type decorator
        row = conn.execute(sa.text(
            "SELECT amount_in, amount_out, executed_price, pg_typeof(amount_in)::text AS kind "
            "FROM orders WHERE id = :id"), {"id": confirmed_order}).one()
    assert row.kind == "numeric"
    assert isinstance(row.amount_in, Decimal) and isinstance(row.amount_out, Decimal)
    assert row.amount_in == Decimal(AMOUNT_IN)
    assert row.amount_out == Decimal(snapshot["amountOut"])
    assert row.executed_price == Decimal(snapshot["executedPrice"])
