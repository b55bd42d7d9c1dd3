"""Live events: publish after commit, fan out to the sockets of this process.

Two backends behind one interface: in-process (the embedded default) and
Redis pub/sub (any number of API and worker processes). Either way a process
keeps ONE connection to the bus and hands each subscriber its own queue, so a
socket costs no connection, and `subscribe` is in force the moment it returns:
that is what lets the WebSocket subscribe first and replay second with no gap.

Pub/sub is at-most-once: a subscriber that may have missed messages (Redis
went away) gets a RESYNC marker and re-reads the database.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Protocol

from orderengine.events import Event

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "orderengine:events:"
RESYNC = object()  # put on subscriber queues when live messages may have been lost


class Subscription:
    """Live events for one consumer: of the orders it follows (one for a single-order
    socket, any number for the stream socket), or of every order. Close it when done."""

    def __init__(self, bus: "LocalFanout", order_ids: tuple[str, ...] = ()) -> None:
        self.order_ids: set[str] = set(order_ids)
        self.everything = False
        self.queue: queue.Queue = queue.Queue()
        self._bus = bus

    @property
    def order_id(self) -> str:
        """The order of a single-order subscription."""
        return next(iter(self.order_ids))

    def follow(self, order_id: str) -> None:
        """Receive this order's events too, from now on."""
        self._bus._add(self, order_id)

    def unfollow(self, order_id: str) -> None:
        self._bus._discard(self, order_id)

    def follow_all(self, on: bool = True) -> None:
        """Receive every order's events (or stop, with on=False; followed orders stay)."""
        self._bus._set_everything(self, on)

    def get(self, timeout: float) -> Event | object | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._remove(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus(Protocol):
    def publish(self, event: Event) -> None: ...
    def publish_many(self, events: list[Event]) -> None: ...
    def subscribe(self, order_id: str) -> Subscription: ...
    def open(self) -> Subscription: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...


class LocalFanout:
    """Subscriber bookkeeping shared by both backends: the process's one feed of
    events is handed out by order id, so a subscriber sees only what it follows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()

    def subscribe(self, order_id: str) -> Subscription:
        """A subscription to one order, in force when this returns."""
        sub = Subscription(self, (order_id,))
        self._add(sub, order_id)
        return sub

    def open(self) -> Subscription:
        """A subscription that follows nothing yet (see Subscription.follow)."""
        return Subscription(self)

    def _add(self, sub: Subscription, order_id: str) -> None:
        with self._lock:
            sub.order_ids.add(order_id)
            self._subs.setdefault(order_id, set()).add(sub)

    def _discard(self, sub: Subscription, order_id: str) -> None:
        with self._lock:
            sub.order_ids.discard(order_id)
            subs = self._subs.get(order_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[order_id]

    def _set_everything(self, sub: Subscription, on: bool) -> None:
        with self._lock:
            sub.everything = on
            (self._everything.add if on else self._everything.discard)(sub)

    def _remove(self, sub: Subscription) -> None:
        for order_id in list(sub.order_ids):
            self._discard(sub, order_id)
        self._set_everything(sub, False)

    def deliver(self, order_id: str, item: Event | object) -> None:
        with self._lock:
            targets = self._subs.get(order_id, set()) | self._everything
        for sub in targets:
            sub.queue.put(item)

    def deliver_all(self, item: object) -> None:
        with self._lock:
            targets = {s for subs in self._subs.values() for s in subs} | self._everything
        for sub in targets:
            sub.queue.put(item)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len({s for subs in self._subs.values() for s in subs} | self._everything)


class MemoryBus(LocalFanout):
    """In-process bus: API, sockets and worker share one process."""

    def publish(self, event: Event) -> None:
        self.deliver(event.order_id, event)

    def publish_many(self, events: list[Event]) -> None:
        for event in events:
            self.deliver(event.order_id, event)

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisBus(LocalFanout):
    """Redis pub/sub: one pattern subscription per process, fanned out locally."""

    def __init__(self, client, reconnect_delay: float = 0.5) -> None:
        super().__init__()
        self._client = client
        self._reconnect_delay = reconnect_delay
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def publish(self, event: Event) -> None:
        """Best effort: the event is already committed, and subscribers that miss
        it catch up from the database."""
        try:
            self._client.publish(CHANNEL_PREFIX + event.order_id, event.to_json())
        except Exception as exc:  # redis down: the database still has it
            log.warning("event publish failed", extra={"order_id": event.order_id,
                                                       "seq": event.seq, "error": str(exc)})

    def publish_many(self, events: list[Event]) -> None:
        """Many events in one Redis round trip (a pipeline); best effort as `publish`."""
        if not events:
            return
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(CHANNEL_PREFIX + event.order_id, event.to_json())
                pipe.execute()
        except Exception as exc:  # redis down: the database still has them
            log.warning("event publish failed", extra={"events": len(events), "error": str(exc)})

    def subscribe(self, order_id: str) -> Subscription:
        self._ensure_listening()
        return super().subscribe(order_id)

    def open(self) -> Subscription:
        self._ensure_listening()
        return super().open()

    def healthy(self) -> bool:
        """Subscribed to Redis right now (False while it reconnects)."""
        return self._ready.is_set()

    def close(self) -> None:
        self._stopping.set()

    def _ensure_listening(self, wait: float = 2.0) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="event-bus", daemon=True)
                self._thread.start()
        # If Redis is down we carry on without live events: sockets poll the database.
        self._ready.wait(wait)

    def _listen(self) -> None:
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.psubscribe(CHANNEL_PREFIX + "*")
                self._pump(pubsub)
            except Exception as exc:
                if self._ready.is_set():
                    log.warning("event bus lost redis; sockets fall back to the database",
                                extra={"error": str(exc)})
                self._ready.clear()
                self.deliver_all(RESYNC)
                time.sleep(self._reconnect_delay)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass

    def _pump(self, pubsub) -> None:
        while not self._stopping.is_set():
            msg = pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            if msg["type"] == "psubscribe":
                if not self._ready.is_set():
                    self._ready.set()
                    self.deliver_all(RESYNC)  # anything published while we were away
                continue
            if msg["type"] != "pmessage":
                continue
            try:
                event = Event.from_dict(json.loads(msg["data"]))
            except (ValueError, KeyError, TypeError):
                log.warning("malformed event on the bus", extra={"channel": str(msg.get("channel"))})
                continue
            self.deliver(event.order_id, event)


def create_bus(redis_client) -> EventBus:
    return MemoryBus() if redis_client is None else RedisBus(redis_client)
