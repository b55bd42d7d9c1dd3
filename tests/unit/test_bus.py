import fakeredis
import pytest

from orderengine.bus import RESYNC, MemoryBus, RedisBus
from orderengine.clock import utcnow
from orderengine.events import Event
from orderengine.lifecycle import Status


def event(order_id="o1", seq=1):
    return Event(order_id, seq, Status.PENDING, utcnow(), 0, {"amountIn": "1"})


@pytest.fixture(params=["memory", "redis"])
def bus(request):
    if request.param == "memory":
        yield MemoryBus()
    else:
        b = RedisBus(fakeredis.FakeRedis())
        yield b
        b.close()


def test_a_subscriber_gets_the_events_of_its_order_only(bus):
    with bus.subscribe("o1") as sub:
        bus.publish(event("o2"))
        bus.publish(event("o1", 1))
        got = sub.get(timeout=2)
        assert got is not None and (got.order_id, got.seq) == ("o1", 1)
        assert got.data == {"amountIn": "1"}
        assert sub.get(timeout=0.1) is None


def test_every_subscriber_of_an_order_gets_each_event(bus):
    with bus.subscribe("o1") as a, bus.subscribe("o1") as b:
        bus.publish(event())
        assert a.get(timeout=2).seq == 1 and b.get(timeout=2).seq == 1


def test_a_closed_subscription_is_forgotten(bus):
    sub = bus.subscribe("o1")
    sub.close()
    assert bus.subscriber_count == 0


def test_publishing_with_redis_down_does_not_raise():
    broken = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    broken.connection_pool.connection_kwargs["server"].connected = False
    RedisBus(broken).publish(event())  # logged, not raised: the event is already committed


def test_subscribers_are_told_to_resync_when_redis_goes_away_and_again_when_it_is_back():
    server = fakeredis.FakeServer()
    bus = RedisBus(fakeredis.FakeRedis(server=server), reconnect_delay=0.05)
    try:
        with bus.subscribe("o1") as sub:
            assert bus.healthy()
            server.connected = False      # the listener's next read fails, as on a Redis restart
            assert sub.get(timeout=5) is RESYNC, "told nothing when live events stopped"
            assert not bus.healthy()
            bus.publish(event("o1", 1))   # lost: the subscriber re-reads the database

            server.connected = True       # the listener subscribes again by itself
            assert sub.get(timeout=5) is RESYNC, "told nothing when live events resumed"
            assert bus.healthy()
            bus.publish(event("o1", 2))
            got = sub.get(timeout=5)
            assert got is not RESYNC and got.seq == 2, "live events did not flow again"
    finally:
        bus.close()
