"""WebSockets: GET /api/orders/execute?orderId=<id>[&since=N] streams one order;
GET /api/orders/stream follows many (orderengine/stream.py).

Protocol (SPEC §4): every event with seq > N, first from the database, then
live, each once and in order; close 1000 after the terminal event. A missing
or malformed orderId gets an {"error": ...} message and close 4400; an
unknown order (or another caller's) the same with 4404; with AUTH=keys, a
missing, unknown or revoked key the same with 4401 (see auth.py).
"""
from __future__ import annotations

import functools
import json
import logging
import time

from flask import current_app, request
from flask_sock import ConnectionClosed, Sock

from orderengine import metrics
from orderengine.api.orders import limit_key
from orderengine.auth import current_caller, key_check, key_revoked, order_owners
from orderengine.errors import (
    EngineError, OrderNotFound, ServerBusy, ServiceUnavailable, TooManySockets, Unauthorized,
)
from orderengine.schemas import parse_events_since, parse_order_id
from orderengine.intake import submit_order
from orderengine.stream import StreamSession
from orderengine.streaming import EventRelay

log = logging.getLogger(__name__)

sock = Sock()

CLOSE_NORMAL = 1000
CLOSE_INTERNAL = 1011
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
WAIT_S = 1.0
STREAM_WAIT_S = 0.05        # the stream socket looks at the client's messages this often
MAX_MESSAGES_PER_ROUND = 100
MAX_EVENTS_PER_ROUND = 1000


def limited(route):
    """The socket takes a slot of this process and of its caller before anything else, or
    is refused at once: one error message, then close 1013 (this process is full) or 4429
    (the caller is at MAX_SOCKETS_PER_KEY). The slot is given back when the socket ends."""
    @functools.wraps(route)
    def guarded(ws) -> None:
        try:
            current_caller()  # a socket whose key was refused takes no slot: 4401 at once
        except Unauthorized as exc:
            _close_with_error(ws, exc)
            return
        slots = current_app.extensions["orderengine"].socket_slots
        try:
            slot = slots.open(limit_key())
        except (ServerBusy, TooManySockets) as exc:
            _close_with_error(ws, exc, exc.close_code)
            return
        try:
            route(ws)
        finally:
            slots.close(slot)
    return guarded


@sock.route("/api/orders/execute")
@limited
@metrics.counts_socket
def order_socket(ws) -> None:
    runtime = current_app.extensions["orderengine"]
    try:
        caller = current_caller()
        allowed = key_check(caller)
        order_id = parse_order_id(request.args.get("orderId"))
        since = parse_events_since(request.args.get("since"))
        relay = EventRelay(runtime.store, order_id, since, owner=caller.scope)
        with runtime.bus.subscribe(order_id) as sub:
            _send(ws, relay.replay())
            while not relay.done and ws.connected:
                if not allowed(fresh=False):   # the key was revoked while the socket was open
                    raise key_revoked()
                _discard_client_messages(ws)
                _send(ws, relay.on_live(sub.get(timeout=WAIT_S)))
    except ConnectionClosed:
        return
    except EngineError as exc:
        _close_with_error(ws, exc)
        return
    except Exception:
        log.exception("order socket failed")
        _close_with_error(ws, ServiceUnavailable("The event stream is not available."), CLOSE_INTERNAL)
        return
    ws.close(reason=CLOSE_NORMAL, message="order is final")


@sock.route("/api/orders/stream")
@limited
@metrics.counts_socket
def stream_socket(ws) -> None:
    """One socket, many orders: see orderengine/stream.py for the protocol."""
    runtime = current_app.extensions["orderengine"]
    try:
        caller = current_caller()
    except Unauthorized as exc:
        _close_with_error(ws, exc)
        return
    caller_limit_key = limit_key()
    allowed = key_check(caller)

    def submit(order, idempotency_key):
        return submit_order(runtime, order, idempotency_key, caller=caller.owner,
                            limit_key=caller_limit_key)

    try:
        with runtime.bus.open() as sub:
            session = StreamSession(runtime.store, sub, submit, ws.send, owner=caller.scope,
                                    owners=order_owners())
            idle_since = time.monotonic()
            while ws.connected:
                for _ in range(MAX_MESSAGES_PER_ROUND):
                    message = ws.receive(timeout=0)
                    if message is None:
                        break
                    if not allowed(fresh=True):   # revoked while open: nothing more on this key
                        _close_with_error(ws, key_revoked())
                        return
                    session.on_message(message)
                item = sub.get(timeout=STREAM_WAIT_S)
                for _ in range(MAX_EVENTS_PER_ROUND):
                    if item is None:
                        break
                    session.on_live(item)
                    item = sub.get(timeout=0)
                if time.monotonic() - idle_since >= 1.0:
                    if not allowed(fresh=False):
                        _close_with_error(ws, key_revoked())
                        return
                    session.on_idle()
                    idle_since = time.monotonic()
    except ConnectionClosed:
        return
    except Exception:
        log.exception("stream socket failed")
        _close_with_error(ws, ServiceUnavailable("The event stream is not available."), CLOSE_INTERNAL)


def _send(ws, events) -> None:
    for event in events:
        ws.send(event.to_json())


def _discard_client_messages(ws) -> None:
    """This socket only talks; drop anything a client sends so it cannot pile up."""
    while ws.receive(timeout=0) is not None:
        pass


def _close_with_error(ws, exc: EngineError, code: int | None = None) -> None:
    if code is None:
        code = (CLOSE_NOT_FOUND if isinstance(exc, OrderNotFound) else
                CLOSE_UNAUTHORIZED if isinstance(exc, Unauthorized) else CLOSE_BAD_REQUEST)
    try:
        ws.send(json.dumps({"error": exc.to_dict()}))
        ws.close(reason=code, message=exc.code)
    except ConnectionClosed:
        pass
