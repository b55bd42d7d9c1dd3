"""AUTH=keys on the WebSockets: a refused socket is told why, then closed (4401, 4404);
the stream socket shows a caller only its own orders, `subscribe all` included.

The handlers run as flask-sock runs them (the request's before_request hooks first, then
the handler with the socket), on a socket that records what it was sent."""
import json
import time
import uuid

import pytest

from orderengine.intake import submit_order
from orderengine.schemas import parse_order_request
from orderengine.stream import StreamSession
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal
from tests.unit.test_auth import keys, settings  # noqa: F401  (the app with AUTH=keys, and its keys)

TERMINAL = {"confirmed", "failed", "cancelled"}


class RecordingSocket:
    """What a client would see: the messages sent, then the close code. Says `script` in turn,
    then hangs up."""

    def __init__(self, script=()):
        self.script = [json.dumps(m) for m in script]
        self.sent: list[dict] = []
        self.close_code: int | None = None
        self.connected = True

    def send(self, text):
        self.sent.append(json.loads(text))

    def receive(self, timeout=None):
        if self.script:
            return self.script.pop(0)
        self.connected = False  # the client has said everything: it goes away
        return None

    def close(self, reason=None, message=None):
        self.close_code, self.connected = reason, False


def socket_rules(app):
    return [rule for rule in app.url_map.iter_rules() if rule.websocket]


def open_socket(app, path, socket, headers=None):
    """Run the WebSocket handler of `path` as a real upgrade request would."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **(headers or {})}
    with app.test_request_context(path, headers=headers):
        from flask import request
        assert request.url_rule.websocket, path
        assert app.preprocess_request() is None
        app.view_functions[request.url_rule.endpoint].__wrapped__(socket)
    return socket


def test_the_app_has_the_two_sockets_under_api(app):
    assert {r.rule for r in socket_rules(app)} == {"/api/orders/execute", "/api/orders/stream"}


@pytest.mark.parametrize("headers,query", [
    ({}, ""),                                                      # no key
    ({"Authorization": "Bearer oe_" + "B" * 43}, ""),            # unknown
    ({}, "apiKey=oe_" + "C" * 43),                                 # unknown, in the URL
])
def test_every_socket_refuses_a_missing_or_unknown_key_with_a_message_then_4401(app, headers, query):
    for rule in socket_rules(app):
        path = f"{rule.rule}?orderId={uuid.uuid4()}&{query}"
        socket = open_socket(app, path, RecordingSocket(), headers)
        assert socket.close_code == 4401, rule.rule
        assert [m["error"]["code"] for m in socket.sent] == ["UNAUTHORIZED"], rule.rule


def test_a_revoked_key_is_refused_on_the_next_socket(app, keys):
    key = keys.create("alice")
    refused = open_socket(app, f"/api/orders/execute?orderId={uuid.uuid4()}&apiKey={key}", RecordingSocket())
    assert refused.close_code == 4404  # accepted: the order does not exist
    keys.revoke("alice")
    refused = open_socket(app, f"/api/orders/execute?orderId={uuid.uuid4()}&apiKey={key}", RecordingSocket())
    assert refused.close_code == 4401 and refused.sent[0]["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("how", ["header", "url"])
def test_another_keys_order_closes_4404_exactly_as_a_missing_one(app, runtime, keys, how):
    alice, bob = keys.create("alice"), keys.create("bob")
    order_id = submit_order(runtime, parse_order_request(SOL_USDC), caller="alice").order_id
    missing = str(uuid.uuid4())

    def watch(target):
        if how == "header":
            return open_socket(app, f"/api/orders/execute?orderId={target}", RecordingSocket(),
                               {"Authorization": f"Bearer {bob}"})
        return open_socket(app, f"/api/orders/execute?orderId={target}&apiKey={bob}", RecordingSocket())

    theirs, nothing = watch(order_id), watch(missing)
    assert theirs.close_code == nothing.close_code == 4404
    assert json.dumps(theirs.sent) == json.dumps(nothing.sent).replace(missing, order_id)
    own = open_socket(app, f"/api/orders/execute?orderId={order_id}&apiKey={alice}", RecordingSocket(), {})
    assert own.sent and own.sent[0]["orderId"] == order_id and own.close_code != 4404


def test_the_stream_socket_refuses_another_keys_order_as_a_missing_one_and_submits_as_the_caller(
        app, runtime, keys):
    bob = keys.create("bob")
    theirs = submit_order(runtime, parse_order_request(SOL_USDC), caller="alice").order_id
    missing = str(uuid.uuid4())
    socket = open_socket(app, f"/api/orders/stream?apiKey={bob}", RecordingSocket([
        {"action": "subscribe", "orderId": theirs, "requestId": 1},
        {"action": "subscribe", "orderId": missing, "requestId": 2},
        {"action": "submit", "order": SOL_USDC, "requestId": 3},
    ]))
    errors = [m for m in socket.sent if m.get("type") == "error"]
    assert [e["requestId"] for e in errors] == [1, 2]
    assert errors[0]["error"] == json.loads(json.dumps(errors[1]["error"]).replace(missing, theirs))
    assert errors[0]["error"]["code"] == "ORDER_NOT_FOUND"
    accepted = next(m for m in socket.sent if m.get("type") == "accepted")
    assert runtime.store.get(accepted["orderId"]).owner == "bob"


class Session:
    """A stream session of one caller, driven without a socket (see test_stream_session.py)."""

    def __init__(self, runtime, owner):
        self.runtime, self.owner, self.sent = runtime, owner, []
        self.sub = runtime.bus.open()
        self.session = StreamSession(runtime.store, self.sub,
                                     lambda order, key: submit_order(runtime, order, key, caller=owner),
                                     lambda text: self.sent.append(json.loads(text)), owner=owner)

    def say(self, message):
        self.session.on_message(json.dumps(message))

    def pump(self):
        while (item := self.sub.get(timeout=0)) is not None:
            self.session.on_live(item)

    def events(self):
        return [m for m in self.sent if "seq" in m]


def test_subscribe_all_delivers_only_the_callers_orders_events(runtime, worker):
    alice, bob = Session(runtime, "alice"), Session(runtime, "bob")
    try:
        alice.say({"action": "subscribe", "all": True})
        bob.say({"action": "subscribe", "all": True})
        def place(owner):
            return submit_order(runtime, parse_order_request(SOL_USDC), caller=owner).order_id
        mine, theirs = [place("alice"), place("alice")], place("bob")
        for order_id in (*mine, theirs):
            wait_terminal(runtime, order_id)

        def finished(session, order_ids):
            session.pump()
            done = {e["orderId"] for e in session.events() if e["status"] in TERMINAL}
            return set(order_ids) <= done
        wait_for(lambda: finished(alice, mine) and finished(bob, [theirs]))

        assert {e["orderId"] for e in alice.events()} == set(mine)
        assert {e["orderId"] for e in bob.events()} == {theirs}
        assert len(bob.events()) == len(runtime.store.events(theirs))  # every one of them, once
    finally:
        alice.sub.close()
        bob.sub.close()


class RevokedMidway(RecordingSocket):
    """Says `script` in turn, running any callable in it (a revocation) when it comes to it."""

    def receive(self, timeout=None):
        while self.script and callable(self.script[0]):
            self.script.pop(0)()
        return super().receive(timeout)


def test_a_key_revoked_while_its_stream_socket_is_open_places_nothing_more(app, runtime, keys):
    key = keys.create("alice")
    submit = {"action": "submit", "order": SOL_USDC}
    socket = RevokedMidway([submit, submit])
    socket.script.insert(1, lambda: keys.revoke("alice"))

    open_socket(app, f"/api/orders/stream?apiKey={key}", socket)

    assert socket.close_code == 4401
    assert [m.get("type") or m["error"]["code"] for m in socket.sent if "seq" not in m] == \
        ["accepted", "UNAUTHORIZED"]
    assert len(runtime.store.page(before=None, limit=10, owner="alice")) == 1


class Listening(RecordingSocket):
    """A client that only listens; `then` runs once, at the first look for its messages.
    Gives up after `patience_s` (so a test that should fail fails rather than hangs)."""

    def __init__(self, then, patience_s=15.0):
        super().__init__()
        self.then, self.deadline = then, time.monotonic() + patience_s

    def receive(self, timeout=None):
        if self.then is not None:
            self.then, then = None, self.then
            then()
        if time.monotonic() > self.deadline:
            self.connected = False
        return None


def test_a_listening_socket_is_closed_4401_soon_after_its_key_is_revoked(app, runtime, keys):
    key = keys.create("alice")
    order_id = submit_order(runtime, parse_order_request(SOL_USDC), caller="alice").order_id
    socket = Listening(then=lambda: keys.revoke("alice"))
    started = time.monotonic()

    open_socket(app, f"/api/orders/execute?orderId={order_id}&apiKey={key}", socket)

    assert socket.close_code == 4401, socket.sent
    assert socket.sent[-1]["error"]["code"] == "UNAUTHORIZED"
    assert time.monotonic() - started < 10
