"""How many WebSockets may be open: MAX_SOCKETS_PER_PROCESS and MAX_SOCKETS_PER_KEY (SPEC §6).

Every socket takes a slot when it opens and gives it back when it ends. The
process's slots are a counter here: over it, the socket is refused at once (close
1013) so a process never holds more sockets than gunicorn.conf.py leaves room for
beside HTTP. A caller's slots are shared by every process on every host through
Redis: one sorted set per caller of socket ids scored by a lease's expiry, which
this process renews for its open sockets (a killed process's sockets stop counting
when their leases run out); in the embedded mode a counter here. Over it: close 4429.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from orderengine.errors import ServerBusy, TooManySockets

log = logging.getLogger(__name__)

KEY_PREFIX = "orderengine:sockets:"
#: a socket whose process stopped renewing its lease stops counting after this long
LEASE_S = 30.0
RENEW_EVERY_S = LEASE_S / 3
WARN_EVERY_S = 10.0


@dataclass(frozen=True)
class Slot:
    caller: str
    socket_id: str
    shared: bool  # registered in Redis (False: counted here, or Redis failed and we let it in)


class SocketSlots:
    """Thread-safe; one per process (the Runtime's)."""

    def __init__(self, per_process: int, per_key: int, redis_client: Any = None,
                 lease_s: float = LEASE_S, clock: Callable[[], float] = time.time) -> None:
        self.per_process, self.per_key = per_process, per_key
        self.redis, self.lease_s, self._clock = redis_client, lease_s, clock
        self._lock = threading.Lock()
        self._open = 0
        self._by_caller: collections.Counter[str] = collections.Counter()
        self._shared: dict[str, Slot] = {}  # socket id -> slot, whose leases this process renews
        self._renewer: threading.Thread | None = None
        self._last_warning = -math.inf

    @property
    def open_count(self) -> int:
        return self._open

    def open(self, caller: str) -> Slot:
        """A slot for one more socket of `caller`; ServerBusy (this process is full) or
        TooManySockets (the caller is at its limit) otherwise."""
        with self._lock:
            if self._open >= self.per_process:
                raise ServerBusy("This server holds as many WebSockets as it may; try again later.")
            if self.redis is None and self._by_caller[caller] >= self.per_key:
                raise TooManySockets(f"At most {self.per_key} WebSockets may be open per API key; "
                                     "close one first.")
            self._open += 1
            self._by_caller[caller] += 1
        slot = Slot(caller, uuid.uuid4().hex, shared=False)
        if self.redis is not None:
            try:
                slot = self._take_shared(slot)
            except BaseException:
                self._give_back_local(caller)
                raise
        return slot

    def close(self, slot: Slot) -> None:
        """Give the slot back (once per `open`)."""
        self._give_back_local(slot.caller)
        if slot.shared:
            with self._lock:
                self._shared.pop(slot.socket_id, None)
            try:
                self.redis.zrem(KEY_PREFIX + slot.caller, slot.socket_id)
            except Exception as exc:  # noqa: BLE001 - its lease runs out instead
                self._warn("socket slot not given back to Redis; its lease will expire", exc)

    def _give_back_local(self, caller: str) -> None:
        with self._lock:
            self._open -= 1
            self._by_caller[caller] -= 1
            if self._by_caller[caller] <= 0:
                del self._by_caller[caller]

    def _take_shared(self, slot: Slot) -> Slot:
        """Add the socket to its caller's set, then count: over the limit it is taken out
        again. Two sockets racing for the last place may both be refused, never both let in."""
        key, now = KEY_PREFIX + slot.caller, self._clock()
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zadd(key, {slot.socket_id: now + self.lease_s})
                pipe.zcard(key)
                pipe.expire(key, math.ceil(self.lease_s) * 2)
                count = pipe.execute()[2]
            if count > self.per_key:
                self.redis.zrem(key, slot.socket_id)
                raise TooManySockets(f"At most {self.per_key} WebSockets may be open per API key; "
                                     "close one first.")
        except TooManySockets:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis away: let it in, counted in this process only
            self._warn("socket not counted for its caller: Redis failed; letting it in", exc)
            return slot
        shared = Slot(slot.caller, slot.socket_id, shared=True)
        with self._lock:
            self._shared[shared.socket_id] = shared
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, name="socket-slot-leases", daemon=True)
                self._renewer.start()
        return shared

    def _renew(self) -> None:
        """Every RENEW_EVERY_S, extend the leases of this process's open sockets (one round
        trip); ends when none is left, and the next shared slot starts it again."""
        while True:
            time.sleep(min(RENEW_EVERY_S, self.lease_s / 3))
            with self._lock:
                held = list(self._shared.values())
                if not held:
                    self._renewer = None
                    return
            expiry = self._clock() + self.lease_s
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    for slot in held:
                        pipe.zadd(KEY_PREFIX + slot.caller, {slot.socket_id: expiry}, xx=True)
                        pipe.expire(KEY_PREFIX + slot.caller, math.ceil(self.lease_s) * 2)
                    pipe.execute()
            except Exception as exc:  # noqa: BLE001 - try again next round
                self._warn("socket leases not renewed: Redis failed", exc)

    def _warn(self, message: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(message, extra={"error": type(exc).__name__})
