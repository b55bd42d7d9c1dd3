"""The replay/live join of the WebSocket, without a socket: EventRelay + a bus."""
import pytest

from orderengine.bus import RESYNC, MemoryBus
from orderengine.clock import utcnow
from orderengine.lifecycle import Status
from orderengine.schemas import parse_order_request
from orderengine.store import OrderStore, Work, new_token
from orderengine.streaming import EventRelay
from tests.unit.conftest import SOL_USDC

STEPS = [Status.ROUTING, Status.BUILDING, Status.SUBMITTED, Status.CONFIRMED]


@pytest.fixture
def store(runtime):
    return OrderStore(runtime.engine, MemoryBus())


@pytest.fixture
def order(store):
    token = new_token()
    order_id = store.create(parse_order_request(SOL_USDC), Work(token, None, utcnow())).order_id
    return order_id, token


def advance(store, order, n):
    order_id, token = order
    done = len(store.events(order_id)) - 1
    for status in STEPS[done:done + n]:
        store.transition(order_id, status, token=token, data={})


def drain(relay, sub):
    sent = []
    while (item := sub.get(timeout=0)) is not None:
        sent += relay.on_live(item)
    return sent


def test_events_published_between_subscribe_and_replay_are_sent_once(store, order):
    order_id, _ = order
    sub = store.bus.subscribe(order_id)
    advance(store, order, 2)              # lands in the log AND in the subscription's queue
    relay = EventRelay(store, order_id)
    sent = relay.replay()                 # seq 1..3 from the database
    sent += drain(relay, sub)             # the queued 2, 3 are dropped as already sent
    advance(store, order, 2)
    sent += drain(relay, sub)
    assert [e.seq for e in sent] == [1, 2, 3, 4, 5]
    assert relay.done


def test_a_hole_in_the_live_stream_is_filled_from_the_log(store, order):
    order_id, _ = order
    relay = EventRelay(store, order_id)
    relay.replay()
    advance(store, order, 3)
    live_seq_4 = store.events(order_id, since=3)[0]  # the bus lost seq 2 and 3
    assert [e.seq for e in relay.on_live(live_seq_4)] == [2, 3, 4]


def test_a_resync_marker_rereads_the_log(store, order):
    order_id, _ = order
    relay = EventRelay(store, order_id)
    relay.replay()
    advance(store, order, 2)
    assert [e.seq for e in relay.on_live(RESYNC)] == [2, 3]


def test_silence_longer_than_the_backstop_checks_the_log(store, order):
    order_id, _ = order
    now = [0.0]
    relay = EventRelay(store, order_id, backstop_s=5, clock=lambda: now[0])
    relay.replay()
    advance(store, order, 1)
    assert relay.on_live(None) == []   # quiet, but not for long: no read
    now[0] = 6.0
    assert [e.seq for e in relay.on_live(None)] == [2]


def test_since_skips_what_the_client_already_has(store, order):
    order_id, _ = order
    advance(store, order, 4)
    relay = EventRelay(store, order_id, since=3)
    assert [e.seq for e in relay.replay()] == [4, 5]
    assert relay.done


def test_a_client_that_has_the_whole_story_is_done_at_once(store, order):
    order_id, _ = order
    advance(store, order, 4)
    relay = EventRelay(store, order_id, since=5)
    assert relay.replay() == [] and relay.done


def test_nothing_after_the_terminal_event_is_sent(store, order):
    order_id, _ = order
    advance(store, order, 4)
    relay = EventRelay(store, order_id)
    assert relay.replay()[-1].status is Status.CONFIRMED
    assert relay.on_live(RESYNC) == []


def test_closing_a_subscription_leaves_nothing_behind(store, order):
    order_id, _ = order
    with store.bus.subscribe(order_id):
        assert store.bus.subscriber_count == 1
    assert store.bus.subscriber_count == 0


def test_a_since_past_the_end_closes_when_the_order_ends(store, order):
    order_id, _ = order
    sub = store.bus.subscribe(order_id)
    relay = EventRelay(store, order_id, since=9)
    assert relay.replay() == [] and not relay.done
    advance(store, order, 4)
    assert drain(relay, sub) == [] and relay.done
