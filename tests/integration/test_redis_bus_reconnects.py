"""Redis pub/sub is at-most-once: when the bus's connection is killed on the real
server, the bus reconnects and tells its subscribers to re-read the log (RESYNC)."""
from __future__ import annotations

import uuid

import pytest
import redis

from orderengine.bus import RESYNC, RedisBus
from orderengine.clock import utcnow
from orderengine.events import Event
from orderengine.lifecycle import Status
from tests.integration.watching import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def bus_name() -> str:
    return f"itest-bus-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bus(redis_url, bus_name):
    # Named connections let the test kill this bus's pub/sub link and no one else's.
    client = redis.Redis.from_url(redis_url, client_name=bus_name, socket_connect_timeout=2,
                                  socket_timeout=5)
    bus = RedisBus(client, reconnect_delay=0.1)
    yield bus
    bus.close()
    client.close()


@pytest.fixture
def admin(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def pubsub_connections(admin, name: str) -> list[str]:
    return [c["id"] for c in admin.client_list(_type="pubsub") if c.get("name") == name]


def event(order_id: str, seq: int, status: Status) -> Event:
    return Event(order_id, seq, status, utcnow(), 0, {"n": seq})


def next_event(sub, timeout: float = 5.0):
    """The next Event off the subscription, skipping RESYNC markers."""
    def take():
        item = sub.get(timeout=0.1)
        return item if isinstance(item, Event) else None
    return wait_for(take, timeout=timeout, interval=0, what="a live event")


def test_a_killed_pubsub_connection_gives_subscribers_a_resync_then_live_events_again(bus, admin, bus_name):
    order_id = str(uuid.uuid4())
    with bus.subscribe(order_id) as sub:
        bus.publish(event(order_id, 1, Status.PENDING))
        assert next_event(sub).seq == 1
        killed = pubsub_connections(admin, bus_name)
        assert len(killed) == 1

        for client_id in killed:
            admin.execute_command("CLIENT KILL", "ID", client_id, "TYPE", "pubsub")

        assert wait_for(lambda: sub.get(timeout=0.1) is RESYNC, timeout=5, interval=0,
                        what="a RESYNC marker")
        wait_for(bus.healthy, timeout=5, what="the bus to be listening again")
        reconnected = wait_for(lambda: pubsub_connections(admin, bus_name), timeout=5)
        assert set(reconnected).isdisjoint(killed)

        bus.publish(event(order_id, 2, Status.ROUTING))
        received = next_event(sub)
        assert (received.order_id, received.seq, received.data) == (order_id, 2, {"n": 2})


def test_a_subscriber_of_another_order_gets_only_the_resync_not_foreign_events(bus, admin, bus_name):
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    with bus.subscribe(mine) as sub:
        for client_id in pubsub_connections(admin, bus_name):
            admin.execute_command("CLIENT KILL", "ID", client_id, "TYPE", "pubsub")
        assert wait_for(lambda: sub.get(timeout=0.1) is RESYNC, timeout=5, interval=0)
        wait_for(bus.healthy, timeout=5)
        bus.publish(event(other, 1, Status.PENDING))
        bus.publish(event(mine, 1, Status.PENDING))
        assert next_event(sub).order_id == mine
