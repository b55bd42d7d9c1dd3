"""GET /api/orders/stream: one socket, many orders (SPEC §4), without the socket.

`StreamSession` is the protocol: it reads the client's messages (submit,
subscribe, unsubscribe) and the live events of one bus subscription that follows
every order the client asked for, and says what to send. Each followed order
gets the same join as the single-order socket (follow first, replay, then live,
dropping seen seqs: `EventRelay`), so its events arrive once and in order; all of
them share one subscription and one thread. A bad message gets an error message
and the socket stays open.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from orderengine.auth import OrderOwners
from orderengine.bus import RESYNC, Subscription
from orderengine.errors import EngineError, ServiceUnavailable, ValidationError
from orderengine.events import Event
from orderengine.logs import brief
from orderengine.schemas import (
    NotJson, parse_events_since, parse_idempotency_key, parse_json, parse_order_id, parse_order_request,
)
from orderengine.streaming import EventRelay

log = logging.getLogger(__name__)

MAX_FOLLOWED = 10_000      # orders one socket may follow at once
BACKSTOP_S = 10.0          # a followed order silent this long is checked against the log
MAX_REQUEST_ID = 128

Submit = Callable[[Any, "str | None"], Any]   # (order request, idempotency key) -> Accepted


class StreamSession:
    """`owner`: the caller's scope (None: AUTH=off, every order); with one, another caller's
    order is not found, and `subscribe all` passes on only the caller's orders' events,
    whose owners `owners` (auth.OrderOwners) knows."""

    def __init__(self, store, sub: Subscription, submit: Submit, send: Callable[[str], None],
                 owner: str | None = None, owners=None) -> None:
        self.store = store
        self.owner = owner
        self.owners = owners if owners is not None or owner is None else OrderOwners(store)
        self.sub = sub
        self.submit = submit
        self._send = send
        self.relays: dict[str, EventRelay] = {}
        self._ended: dict[str, int] = {}  # order id -> last seq sent, of orders no longer followed

    # --- the client's messages ------------------------------------------------------

    def on_message(self, raw: str | bytes) -> None:
        request_id = None
        try:
            message = _decode(raw)
            request_id = _request_id(message)
            action = message.get("action")
            handler = {"submit": self._submit, "subscribe": self._subscribe,
                       "unsubscribe": self._unsubscribe}.get(action) if isinstance(action, str) else None
            if handler is None:
                raise ValidationError("Unknown action.", fields={
                    "action": ["Must be one of: submit, subscribe, unsubscribe."]})
            handler(message, request_id)
        except EngineError as exc:
            self._reply({"type": "error", "error": exc.to_dict()}, request_id)
        except Exception:  # the database away, a bug: this request fails, the socket goes on
            log.exception("stream request failed")
            self._reply({"type": "error", "error": ServiceUnavailable(
                "The request could not be carried out now; try again.").to_dict()}, request_id)

    def _submit(self, message: dict[str, Any], request_id: Any) -> None:
        _only(message, {"action", "order", "idempotencyKey", "requestId"})
        key = message.get("idempotencyKey")
        if key is not None and not isinstance(key, str):
            key = ""  # refused below, like any other malformed key
        order = parse_order_request(message.get("order"))
        accepted = self.submit(order, parse_idempotency_key(key, field="idempotencyKey"))
        reply = {"type": "accepted", "orderId": accepted.order_id, "status": "pending"}
        if accepted.replayed:
            reply["replayed"] = True
        self._reply(reply, request_id)
        self._follow(accepted.order_id, 0)

    def _subscribe(self, message: dict[str, Any], request_id: Any) -> None:
        _only(message, {"action", "orderId", "since", "all", "requestId"})
        if message.get("all") is not None:
            if message["all"] is not True or "orderId" in message:
                raise ValidationError("The subscription is not valid.", fields={
                    "all": ["Send \"all\": true alone, or an orderId."]})
            self.sub.follow_all()
            self._reply({"type": "subscribed", "all": True}, request_id)
            return
        order_id = parse_order_id(message.get("orderId"))
        since = _since(message.get("since"))
        self.store.require(order_id, self.owner)  # OrderNotFound -> an error message
        if order_id not in self.relays and len(self.relays) >= MAX_FOLLOWED:
            raise ValidationError("This socket follows as many orders as it may.", fields={
                "orderId": [f"At most {MAX_FOLLOWED} orders at once: unsubscribe some first."]})
        self._reply({"type": "subscribed", "orderId": order_id}, request_id)
        self._follow(order_id, since)

    def _unsubscribe(self, message: dict[str, Any], request_id: Any) -> None:
        _only(message, {"action", "orderId", "all", "requestId"})
        if message.get("all") is True and "orderId" not in message:
            self.sub.follow_all(False)
            self._reply({"type": "unsubscribed", "all": True}, request_id)
            return
        order_id = parse_order_id(message.get("orderId"))
        self._drop(order_id)
        self._reply({"type": "unsubscribed", "orderId": order_id}, request_id)

    # --- live events ------------------------------------------------------------------

    def on_live(self, item: Event | object) -> None:
        if item is RESYNC:
            for order_id, relay in list(self.relays.items()):
                self._safely(order_id, relay.catch_up)
            return
        assert isinstance(item, Event)
        relay = self.relays.get(item.order_id)
        if relay is not None:
            self._safely(item.order_id, lambda: relay.on_live(item))
        elif (self.sub.everything and item.seq > self._ended.get(item.order_id, 0)
              and self._mine(item.order_id)):
            self._send(item.to_json())

    def on_idle(self) -> None:
        """Now and then: pub/sub is at-most-once, so silent orders are checked against the log."""
        for order_id, relay in list(self.relays.items()):
            self._safely(order_id, lambda relay=relay: relay.on_live(None))

    def _safely(self, order_id: str, step: Callable[[], list[Event]]) -> None:
        """A followed order's next events; if the log cannot be read now (the database
        away), the order is checked again at the next idle round, and the others go on."""
        try:
            events = step()
        except Exception as exc:
            log.warning("stream could not read an order's events; will try again",
                        extra={"order_id": order_id, "error": brief(exc, 200)})
            return
        self._relay(order_id, events)

    # --- helpers ----------------------------------------------------------------------

    def _mine(self, order_id: str) -> bool:
        """Is this the caller's order? (Always, with AUTH=off.) If its owner cannot be read
        now, the event is not sent: `all` promises no replay, and never another's order."""
        if self.owner is None:
            return True
        try:
            return self.owners.owner_of(order_id) == self.owner
        except Exception as exc:
            log.warning("stream could not read an order's owner; its event is not sent",
                        extra={"order_id": order_id, "error": brief(exc, 200)})
            return False

    def _follow(self, order_id: str, since: int) -> None:
        if order_id in self.relays:  # already followed: it goes on from where it is
            return
        self.sub.follow(order_id)  # first: nothing published from now on is missed
        relay = EventRelay(self.store, order_id, since, backstop_s=BACKSTOP_S, owner=self.owner)
        try:
            events = relay.replay()
        except Exception:
            self.sub.unfollow(order_id)
            raise
        self.relays[order_id] = relay
        self._relay(order_id, events)

    def _relay(self, order_id: str, events: list[Event]) -> None:
        for event in events:
            self._send(event.to_json())
        relay = self.relays.get(order_id)
        if relay is not None and relay.done:  # a subscription ends with its order's terminal event
            self._drop(order_id)

    def _drop(self, order_id: str) -> None:
        relay = self.relays.pop(order_id, None)
        if relay is not None:
            self.sub.unfollow(order_id)
            # live copies of what it sent may still be queued: with "all" on they must not go twice
            self._ended[order_id] = relay.last_seq
            if len(self._ended) > MAX_FOLLOWED:
                self._ended.pop(next(iter(self._ended)))

    def _reply(self, body: dict[str, Any], request_id: Any) -> None:
        if request_id is not None:
            body["requestId"] = request_id
        self._send(json.dumps(body, separators=(",", ":")))


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        message = parse_json(raw)  # exact numbers, no key twice, as a POST body
    except NotJson:
        raise ValidationError("The message is not valid JSON.") from None
    if not isinstance(message, dict):
        raise ValidationError("A message is a JSON object with an \"action\".")
    return message


def _request_id(message: dict[str, Any]) -> Any:
    """The client's requestId, echoed on the answer: a string or an integer."""
    value = message.get("requestId")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or len(str(value)) > MAX_REQUEST_ID:
        raise ValidationError("The requestId is not valid.", fields={
            "requestId": [f"Must be a string or an integer of at most {MAX_REQUEST_ID} characters."]})
    return value


def _since(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError("The subscription is not valid.", fields={
            "since": ["Must be a non-negative integer."]})
    return parse_events_since(str(value))


def _only(message: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(message) - allowed)
    if unknown:
        raise ValidationError("The message is not valid.", fields={
            name[:64]: ["Unknown field."] for name in unknown[:20]})

