"""SPEC §6's limits: orders per caller per minute, orders waiting across the deployment,
WebSockets per caller and per process."""
import json

import fakeredis
import pytest
import sqlalchemy as sa

from orderengine.admission import QueueCap, RateLimit
from orderengine.app import create_app
from orderengine.errors import ServerBusy, TooManySockets
from orderengine.models import idempotency_keys, order_events, orders
from orderengine.runtime import Runtime
from orderengine.socketslots import SocketSlots
from orderengine.stream import StreamSession
from tests.fakes import registry_of
from tests.unit.conftest import SOL_USDC


def stored(runtime) -> tuple[int, int, int]:
    """(orders, events, idempotency keys) in the database."""
    with runtime.engine.connect() as conn:
        return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                     for t in (orders, order_events, idempotency_keys))


@pytest.fixture
def limited(settings, venues):
    """An app with small limits; `limited(rate=.., queue=..)` builds it."""
    made = []

    def build(**changes):
        rt = Runtime(settings.replace(**changes), registry=registry_of(*venues))
        made.append(rt)
        return rt, create_app(rt.settings, runtime=rt).test_client()

    yield build
    for rt in made:
        rt.close()


def post(client, key=None, addr="10.0.0.1"):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/api/orders/execute", json=SOL_USDC, headers=headers,
                       environ_base={"REMOTE_ADDR": addr})


# --- RATE_LIMIT_PER_MINUTE -----------------------------------------------------------------

def test_over_the_rate_limit_a_post_gets_429_with_retry_after_and_nothing_is_stored(limited):
    runtime, client = limited(rate_limit_per_minute=3)
    assert [post(client).status_code for _ in range(3)] == [201, 201, 201]
    before = stored(runtime)
    refused = post(client)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["retryAfter"] == int(refused.headers["Retry-After"])
    assert stored(runtime) == before


def test_the_rate_limit_is_per_caller(limited):
    runtime, client = limited(rate_limit_per_minute=2)
    assert [post(client, addr="10.0.0.1").status_code for _ in range(3)] == [201, 201, 429]
    assert post(client, addr="10.0.0.2").status_code == 201


def test_an_idempotent_replay_counts_against_the_rate_limit(limited):
    runtime, client = limited(rate_limit_per_minute=2)
    assert post(client, key="k1").status_code == 201
    replay = post(client, key="k1")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert post(client, key="k1").status_code == 429


def test_an_invalid_body_is_not_counted(limited):
    runtime, client = limited(rate_limit_per_minute=1)
    bad = client.post("/api/orders/execute", json={**SOL_USDC, "amountIn": "-1"})
    assert bad.status_code == 400
    assert post(client, addr="127.0.0.1").status_code == 201


def test_the_moving_window_lets_a_caller_in_again_60_s_after_its_oldest_order(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    limit = RateLimit(2)
    limit.check("a")
    now[0] += 30
    limit.check("a")
    now[0] += 29
    with pytest.raises(Exception) as refused:
        limit.check("a")
    assert refused.value.code == "RATE_LIMITED" and refused.value.retry_after_s == 1
    now[0] += 1.01  # the first is 60 s old: one place is free, the second still holds the other
    limit.check("a")
    with pytest.raises(Exception):
        limit.check("a")


def test_a_rate_limit_storage_that_fails_lets_the_order_through_with_a_warning(caplog):
    broken = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    broken.connection_pool.connection_kwargs["server"].connected = False
    limit = RateLimit(1, broken, "redis://broken")
    limit.check("a")
    limit.check("a")  # would be over the limit: the storage could not say, so it is let in
    assert "rate limit not checked" in caplog.text


def test_the_stream_socket_answers_rate_limited_and_stays_open(limited):
    runtime, _ = limited(rate_limit_per_minute=1)
    sent = []
    with runtime.bus.open() as sub:
        from orderengine.intake import submit_order
        session = StreamSession(runtime.store, sub,
                                lambda order, key: submit_order(runtime, order, key, limit_key="addr:x"),
                                lambda text: sent.append(json.loads(text)))
        for request_id in (1, 2):
            session.on_message(json.dumps({"action": "submit", "order": SOL_USDC, "requestId": request_id}))
        session.on_message(json.dumps({"action": "subscribe", "all": True, "requestId": 3}))
    assert sent[0]["type"] == "accepted"
    refused = next(m for m in sent if m.get("requestId") == 2)
    assert refused["type"] == "error" and refused["error"]["code"] == "RATE_LIMITED"
    assert refused["error"]["retryAfter"] >= 1
    assert any(m.get("type") == "subscribed" and m.get("requestId") == 3 for m in sent)


# --- MAX_QUEUED_ORDERS ---------------------------------------------------------------------

def test_a_full_queue_refuses_a_new_order_with_503_overloaded_and_stores_nothing(limited):
    runtime, client = limited(max_queued_orders=2)
    assert post(client, key="a").status_code == 201
    assert post(client, key="b").status_code == 201
    before = stored(runtime)
    refused = post(client, key="c")
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "OVERLOADED"
    assert int(refused.headers["Retry-After"]) >= 1
    assert stored(runtime) == before  # no order, no event, no idempotency key


def test_a_replay_is_answered_even_when_the_queue_is_full(limited):
    runtime, client = limited(max_queued_orders=1)
    first = post(client, key="a")
    assert post(client, key="b").status_code == 503
    replay = post(client, key="a")
    assert replay.status_code == 201 and replay.get_json()["orderId"] == first.get_json()["orderId"]


def test_orders_that_left_the_queue_make_room_once_the_count_is_refreshed(runtime):
    clock = [0.0]
    cap = QueueCap(runtime.engine, 2, refresh_s=0.2, clock=lambda: clock[0])
    from orderengine.intake import submit_order
    from orderengine.schemas import parse_order_request
    runtime.intake.queue_cap = cap
    ids = [submit_order(runtime, parse_order_request(SOL_USDC)).order_id for _ in range(2)]
    with pytest.raises(Exception) as full:
        cap.admit()
    assert full.value.code == "OVERLOADED"
    runtime.store.cancel(ids[0], "test")  # no longer waiting to be submitted
    with pytest.raises(Exception):
        cap.admit()  # the count is not stale yet
    clock[0] += 0.2
    cap.admit()


def test_the_queue_count_is_read_at_most_once_per_refresh_interval(runtime, monkeypatch):
    reads = []
    import orderengine.admission as admission
    real = admission.count_unsubmitted
    monkeypatch.setattr(admission, "count_unsubmitted", lambda *a: reads.append(1) or real(*a))
    clock = [0.0]
    cap = QueueCap(runtime.engine, 1000, refresh_s=0.2, clock=lambda: clock[0])
    for _ in range(50):
        cap.admit()
    clock[0] += 0.25
    for _ in range(50):
        cap.admit()
    assert len(reads) == 2


# --- sockets per caller, per process ---------------------------------------------------------

@pytest.mark.parametrize("redis_client", [None, "fake"], ids=["embedded", "redis"])
def test_a_caller_over_its_socket_limit_is_refused_and_a_closed_socket_frees_a_place(redis_client):
    slots = SocketSlots(per_process=100, per_key=2,
                        redis_client=fakeredis.FakeRedis() if redis_client else None)
    a, b = slots.open("k"), slots.open("k")
    with pytest.raises(TooManySockets) as refused:
        slots.open("k")
    assert refused.value.close_code == 4429
    slots.open("other")
    slots.close(a)
    slots.open("k")
    assert slots.open_count == 3 + 0  # b, other, and the new one (the refused one took nothing)
    slots.close(b)


def test_sockets_are_counted_across_processes_through_redis():
    server = fakeredis.FakeServer()
    one = SocketSlots(100, 2, fakeredis.FakeRedis(server=server))
    two = SocketSlots(100, 2, fakeredis.FakeRedis(server=server))
    one.open("k")
    two.open("k")
    with pytest.raises(TooManySockets):
        one.open("k")


def test_the_sockets_of_a_process_that_died_stop_counting_when_their_leases_end():
    server, clock = fakeredis.FakeServer(), [1000.0]
    dead = SocketSlots(100, 1, fakeredis.FakeRedis(server=server), lease_s=30, clock=lambda: clock[0])
    alive = SocketSlots(100, 1, fakeredis.FakeRedis(server=server), lease_s=30, clock=lambda: clock[0])
    dead.open("k")  # ...and its process is killed: nobody renews or closes it
    with pytest.raises(TooManySockets):
        alive.open("k")
    clock[0] += 31
    alive.open("k")


def test_a_full_process_refuses_one_more_socket_with_1013():
    slots = SocketSlots(per_process=2, per_key=100)
    slots.open("a")
    slots.open("b")
    with pytest.raises(ServerBusy) as refused:
        slots.open("c")
    assert refused.value.close_code == 1013


def test_an_order_refused_by_the_rate_limit_takes_no_place_in_the_queue(limited):
    runtime, client = limited(rate_limit_per_minute=1, max_queued_orders=2)
    assert post(client, addr="10.0.0.1").status_code == 201
    assert post(client, addr="10.0.0.1").status_code == 429
    assert post(client, addr="10.0.0.2").status_code == 201
