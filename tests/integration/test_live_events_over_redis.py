"""The replay/live join across processes: runtime A follows orders that runtime B's
worker executes, with Redis pub/sub in between (what the WebSocket does)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from orderengine.events import Event
from orderengine.intake import submit_order
from orderengine.streaming import EventRelay
from tests.integration.watching import HAPPY_PATH, order_request, wait_for

pytestmark = pytest.mark.integration

FOLLOW_TIMEOUT_S = 20


def follow(runtime, order_id: str, since: int = 0) -> tuple[list[Event], list[int]]:
    """Subscribe, replay, relay live events until the terminal one, as the socket does.
    Returns what was delivered and the seqs that came in over the bus."""
    relay = EventRelay(runtime.store, order_id, since)
    live: list[int] = []
    with runtime.bus.subscribe(order_id) as sub:
        delivered = relay.replay()
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        while not relay.done:
            assert time.monotonic() < deadline, f"{order_id}: no terminal event; got {delivered}"
            item = sub.get(timeout=0.1)
            if isinstance(item, Event):
                live.append(item.seq)
            delivered += relay.on_live(item)
    return delivered, live


def last_seq(runtime, order_id: str) -> int:
    row = runtime.store.get(order_id)
    return row.last_seq if row else 0


@pytest.fixture
def api_and_worker(fleet):
    """Runtime A takes orders and follows them; runtime B only executes them."""
    latency = dict(mock_quote_latency_ms=50, mock_exec_latency_ms=500)
    api, executor = fleet.runtime(**latency), fleet.runtime(**latency)
    fleet.worker(executor)
    return api, executor


def test_a_follower_joining_mid_flight_gets_every_event_once_in_order(api_and_worker):
    api, _ = api_and_worker
    # Eight orders at once; each follower joins after its order logged 1, 2, 3 or 4 events.
    join_after = [1, 2, 3, 4, 1, 2, 3, 4]

    def run_and_follow(seen: int):
        order_id = submit_order(api, order_request(amountIn="0.5")).order_id
        wait_for(lambda: last_seq(api, order_id) >= seen, timeout=10, what=f"seq {seen} of {order_id}")
        return order_id, *follow(api, order_id)

    with ThreadPoolExecutor(max_workers=len(join_after)) as pool:
        results = list(pool.map(run_and_follow, join_after))

    for order_id, delivered, live in results:
        assert [(e.seq, e.status.value) for e in delivered] == list(enumerate(HAPPY_PATH, start=1)), order_id
        assert all(e.order_id == order_id for e in delivered)
        assert 5 in live, f"{order_id}: the confirmation should have come live from the other runtime"


def test_a_follower_subscribed_before_the_first_step_gets_the_whole_story_live(api_and_worker):
    api, _ = api_and_worker
    order_id = submit_order(api, order_request()).order_id
    delivered, live = follow(api, order_id)
    assert [e.seq for e in delivered] == [1, 2, 3, 4, 5]
    assert set(live) >= {3, 4, 5}  # the pending event may precede the subscription


def test_since_n_replays_only_the_events_after_n(api_and_worker):
    api, _ = api_and_worker
    order_id = submit_order(api, order_request()).order_id
    wait_for(lambda: last_seq(api, order_id) >= 2, timeout=10, what="the routing event")
    delivered, _ = follow(api, order_id, since=2)
    assert [(e.seq, e.status.value) for e in delivered] == [
        (3, "building"), (4, "submitted"), (5, "confirmed")]


def test_since_n_after_the_end_replays_only_the_tail(api_and_worker):
    api, _ = api_and_worker
    order_id = submit_order(api, order_request()).order_id
    follow(api, order_id)  # until confirmed
    delivered, live = follow(api, order_id, since=3)
    assert [e.seq for e in delivered] == [4, 5] and live == []
    assert follow(api, order_id, since=5)[0] == []
