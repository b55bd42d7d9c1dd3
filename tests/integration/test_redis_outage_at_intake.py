"""Redis unreachable: the API refuses orders with a 503 instead of storing orders
nobody will execute, and /health says what is down."""
from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

from orderengine.app import create_app
from orderengine.models import order_events, orders
from tests.integration.watching import order_body

pytestmark = pytest.mark.integration

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def runtime_without_redis(fleet):
    client = redis.Redis.from_url(CLOSED_PORT_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    return fleet.runtime(redis_client=client, redis_url=CLOSED_PORT_URL)


@pytest.fixture
def client(fleet, runtime_without_redis):
    settings = fleet.settings.replace(redis_url=CLOSED_PORT_URL)
    return create_app(settings, runtime=runtime_without_redis).test_client()


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_an_order_posted_while_redis_is_down_is_refused_with_503_and_not_stored(
        client, runtime_without_redis):
    response = client.post("/api/orders/execute", json=order_body())
    assert response.status_code == 503
    assert response.is_json
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert count(runtime_without_redis.engine, orders) == 0
    assert count(runtime_without_redis.engine, order_events) == 0


def test_health_is_503_and_names_redis_when_redis_is_down(client):
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert "redis" in body["failing"]
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
