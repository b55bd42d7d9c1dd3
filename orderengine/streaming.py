"""Joining the stored history to the live tail, with no gap and no repeat.

The socket subscribes to the bus FIRST, then replays the log from the
database, then relays live events. An event published between the two is
already in the subscription's queue; `EventRelay` drops what it has sent
(seq <= last) and, when it sees a hole (seq > last + 1), a RESYNC marker, or
a long silence, reads the log again from `last`. So every event goes out
once, in seq order, whichever process produced it and whatever the bus lost.
"""
from __future__ import annotations

import time
from typing import Callable

from orderengine.bus import RESYNC
from orderengine.events import Event
from orderengine.lifecycle import is_terminal
from orderengine.store import OrderStore


class EventRelay:
    def __init__(self, store: OrderStore, order_id: str, since: int = 0,
                 backstop_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 owner: str | None = None) -> None:
        self.store = store
        self.order_id = order_id
        self.owner = owner  # the caller's scope: another's order is OrderNotFound, as a missing one
        self.last_seq = since
        self.done = False
        self._backstop_s = backstop_s
        self._clock = clock
        self._last_read = clock()

    def replay(self) -> list[Event]:
        """Everything after `since` that is already stored."""
        row = self.store.require(self.order_id, self.owner)
        if is_terminal(row.status) and row.last_seq <= self.last_seq:
            self.done = True  # the client has seen the whole story already
            return []
        return self.catch_up()

    def catch_up(self) -> list[Event]:
        self._last_read = self._clock()
        events = self._accept(self.store.events(self.order_id, self.last_seq))
        if not events and not self.done:
            row = self.store.require(self.order_id)
            self.done = is_terminal(row.status) and row.last_seq <= self.last_seq  # `since` was past it
        return events

    def on_live(self, item: Event | object | None) -> list[Event]:
        """What to send for one thing taken off the subscription (None: nothing came)."""
        if item is None:
            if self._clock() - self._last_read >= self._backstop_s:
                return self.catch_up()  # pub/sub is at-most-once: check the log now and then
            return []
        if item is RESYNC:
            return self.catch_up()
        assert isinstance(item, Event)
        if item.seq <= self.last_seq:
            self.done = self.done or item.terminal  # the end, which the client had (`since`)
            return []  # already sent (it was in the replay)
        if item.seq > self.last_seq + 1:
            return self.catch_up()  # we missed something: the log has it
        return self._accept([item])

    def _accept(self, events: list[Event]) -> list[Event]:
        out = []
        for event in events:
            if self.done or event.seq != self.last_seq + 1:
                continue
            out.append(event)
            self.last_seq = event.seq
            if event.terminal:
                self.done = True
        return out
