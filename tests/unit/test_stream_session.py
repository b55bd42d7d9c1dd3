"""The stream socket's protocol (one socket, many orders), driven without the socket."""
import json

import pytest

from orderengine.intake import submit_order
from orderengine.schemas import parse_order_request
from orderengine.stream import StreamSession
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal

TERMINAL = {"confirmed", "failed", "cancelled"}


class Client:
    """A stream session and everything it sent, decoded."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.sent: list[dict] = []
        self.sub = runtime.bus.open()
        self.session = StreamSession(runtime.store, self.sub, self._submit,
                                     lambda text: self.sent.append(json.loads(text)))

    def _submit(self, order, key):
        return submit_order(self.runtime, order, key)

    def say(self, message) -> None:
        self.session.on_message(message if isinstance(message, str) else json.dumps(message))

    def pump(self) -> None:
        """Hand the session whatever the bus delivered."""
        while (item := self.sub.get(timeout=0)) is not None:
            self.session.on_live(item)

    def events(self, order_id=None):
        return [m for m in self.sent if "seq" in m and (order_id is None or m["orderId"] == order_id)]

    def replies(self, kind):
        return [m for m in self.sent if m.get("type") == kind]


@pytest.fixture
def stream(runtime):
    client = Client(runtime)
    yield client
    client.sub.close()


def place(runtime) -> str:
    return submit_order(runtime, parse_order_request(SOL_USDC)).order_id


def run_until_final(stream, order_ids):
    def done():
        stream.pump()
        return all(any(e["status"] in TERMINAL for e in stream.events(i)) for i in order_ids)
    wait_for(done)


def test_a_subscription_replays_then_follows_live_and_ends_with_the_terminal_event(runtime, stream, worker):
    order_id = place(runtime)
    stream.say({"action": "subscribe", "orderId": order_id, "requestId": "r1"})
    assert stream.sent[0] == {"type": "subscribed", "orderId": order_id, "requestId": "r1"}
    run_until_final(stream, [order_id])
    seqs = [e["seq"] for e in stream.events(order_id)]
    assert seqs == list(range(1, len(seqs) + 1)) and stream.events(order_id)[-1]["status"] == "confirmed"
    assert order_id not in stream.sub.order_ids  # the subscription ended by itself


def test_since_skips_what_the_client_has_seen(runtime, stream, worker):
    order_id = place(runtime)
    wait_terminal(runtime, order_id)
    stream.say({"action": "subscribe", "orderId": order_id, "since": 3})
    assert [e["seq"] for e in stream.events(order_id)] == [4, 5]


def test_a_submit_answers_accepted_and_the_orders_events_follow_on_the_socket(runtime, stream, worker):
    stream.say({"action": "submit", "order": SOL_USDC, "requestId": 7})
    accepted = stream.replies("accepted")
    assert len(accepted) == 1 and accepted[0]["requestId"] == 7 and accepted[0]["status"] == "pending"
    order_id = accepted[0]["orderId"]
    run_until_final(stream, [order_id])
    assert [e["status"] for e in stream.events(order_id)] == [
        "pending", "routing", "building", "submitted", "confirmed"]


@pytest.mark.parametrize("message,field", [
    ("not json", None),
    ({"action": "dance"}, "action"),
    ({"action": "subscribe", "orderId": "nope"}, "orderId"),
    ({"action": "subscribe", "orderId": "00000000-0000-4000-8000-000000000000", "since": -1}, "since"),
    ({"action": "subscribe", "orderId": "00000000-0000-4000-8000-000000000000", "since": True}, "since"),
    ({"action": "subscribe", "all": "yes"}, "all"),
    ({"action": "submit", "order": {**SOL_USDC, "amountIn": "-1"}}, "amountIn"),
    ({"action": "submit", "order": SOL_USDC, "idempotencyKey": ""}, "idempotencyKey"),
    ({"action": "subscribe", "orderId": "00000000-0000-4000-8000-000000000000", "extra": 1}, "extra"),
])
def test_an_invalid_message_gets_an_error_message_and_the_socket_stays_usable(runtime, stream, message, field):
    if isinstance(message, dict):
        message = {**message, "requestId": "x"}
    stream.say(message)
    error = stream.replies("error")[-1]
    assert error["error"]["code"] == "VALIDATION_ERROR"
    if field:
        assert field in error["error"]["fields"] and error["requestId"] == "x"
    order_id = place(runtime)
    stream.say({"action": "subscribe", "orderId": order_id})
    assert stream.replies("subscribed")[-1]["orderId"] == order_id


def test_an_order_that_does_not_exist_is_an_error_message(stream):
    stream.say({"action": "subscribe", "orderId": "00000000-0000-4000-8000-000000000000"})
    assert stream.replies("error")[-1]["error"]["code"] == "ORDER_NOT_FOUND"


def test_after_unsubscribe_no_more_events_of_that_order_arrive(runtime, stream):
    order_id = place(runtime)
    stream.say({"action": "subscribe", "orderId": order_id})
    stream.say({"action": "unsubscribe", "orderId": order_id, "requestId": 2})
    assert stream.replies("unsubscribed") == [{"type": "unsubscribed", "orderId": order_id, "requestId": 2}]
    runtime.store.cancel(order_id, "test")
    stream.pump()
    assert [e["status"] for e in stream.events(order_id)] == ["pending"]


def test_subscribe_all_follows_every_new_order_until_unsubscribed(runtime, stream):
    stream.say({"action": "subscribe", "all": True})
    assert stream.replies("subscribed") == [{"type": "subscribed", "all": True}]
    first = place(runtime)
    stream.pump()
    stream.say({"action": "unsubscribe", "all": True})
    place(runtime)
    stream.pump()
    assert [(e["orderId"], e["status"]) for e in stream.events()] == [(first, "pending")]


def test_one_socket_follows_a_thousand_orders_each_event_once_in_order(runtime, stream, worker):
    order_ids = [place(runtime) for _ in range(1000)]
    for order_id in order_ids:
        stream.say({"action": "subscribe", "orderId": order_id})
    run_until_final(stream, order_ids)
    for order_id in order_ids:
        seqs = [e["seq"] for e in stream.events(order_id)]
        assert seqs == list(range(1, len(seqs) + 1)), order_id
    assert not stream.sub.order_ids


def test_a_submit_with_a_key_seen_before_is_answered_with_the_first_order(runtime, stream):
    stream.say({"action": "submit", "order": SOL_USDC, "idempotencyKey": "s-1"})
    stream.say({"action": "submit", "order": SOL_USDC, "idempotencyKey": "s-1"})
    stream.say({"action": "submit", "order": {**SOL_USDC, "amountIn": "3"}, "idempotencyKey": "s-1"})
    first, again = stream.replies("accepted")
    assert again["orderId"] == first["orderId"] and again["replayed"] is True and "replayed" not in first
    assert stream.replies("error")[-1]["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize("action", [[], {}, 7, None])
def test_an_action_of_the_wrong_type_is_an_error_message(stream, action):
    stream.say({"action": action})
    assert stream.replies("error")[-1]["error"]["code"] == "VALIDATION_ERROR"


def test_with_all_on_an_order_followed_to_its_end_is_not_sent_twice(runtime, stream, worker):
    stream.say({"action": "subscribe", "all": True})
    order_id = place(runtime)
    wait_terminal(runtime, order_id)
    stream.say({"action": "subscribe", "orderId": order_id})  # replays 1..5 and ends the follow
    stream.pump()  # the live copies of 1..5, queued meanwhile
    seqs = [e["seq"] for e in stream.events(order_id)]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 5
