"""Who may place how many orders: RATE_LIMIT_PER_MINUTE and MAX_QUEUED_ORDERS (SPEC §6).

`RateLimit` counts one caller's order submissions in any 60 s: the `limits`
library's moving window, in Redis when REDIS_URL is set (one Lua script per
submission: a single round trip, atomic, shared by every process on every
host) and in this process's memory in the embedded mode. `QueueCap` refuses a
new order while the deployment holds MAX_QUEUED_ORDERS accepted orders not yet
`submitted`, from a count this process refreshes at most every `refresh_s`
(a COUNT per POST would cost more than the POST). Both refuse before anything
is stored.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from orderengine.errors import Overloaded, RateLimited
from orderengine.store import count_unsubmitted

log = logging.getLogger(__name__)

RATE_KEY_PREFIX = "orderengine:ratelimit"
#: a storage failure is logged at most this often (a Redis that is away would log every POST)
WARN_EVERY_S = 10.0
#: how stale the per-process count of queued orders may be
QUEUE_COUNT_REFRESH_S = 0.2
#: what a client refused with OVERLOADED is told to wait: the count is fresh again by then
OVERLOADED_RETRY_AFTER_S = 1


class _Warner:
    """A warning about a failing dependency, at most once every WARN_EVERY_S."""

    def __init__(self) -> None:
        self._last = -math.inf

    def __call__(self, message: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last >= WARN_EVERY_S:
            self._last = now
            log.warning(message, extra={"error": type(exc).__name__})


class RateLimit:
    """At most `per_minute` order submissions per caller in any 60 s.

    A refused submission is not counted (a client that keeps trying is let in as soon
    as its oldest submission is 60 s old). If the storage (Redis) fails, the submission
    is let through with a logged warning: the limit protects the service from one
    caller, not the correctness of an order, and the order needs the same Redis for its
    queue, so it is refused (503) there if Redis is really away.
    """

    def __init__(self, per_minute: int, redis_client: Any = None, redis_url: str | None = None) -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.redis: RedisStorage | None = None
        if redis_client is None:
            storage = MemoryStorage()
        else:  # the runtime's connection pool: its timeouts, no second set of connections
            storage = self.redis = RedisStorage(redis_url or "redis://", key_prefix=RATE_KEY_PREFIX,
                                                connection_pool=redis_client.connection_pool)
        self.limiter = MovingWindowRateLimiter(storage)
        self._warn = _Warner()

    def check(self, caller: str) -> None:
        """Count one submission of `caller`; RateLimited (with whole seconds to wait) if over."""
        refused = self.check_many([caller])[0]
        if refused is not None:
            raise refused

    def check_many(self, callers: list[str]) -> list[RateLimited | None]:
        """Count one submission of each caller (a caller may appear more than once), in
        order; for each, None (counted) or the RateLimited it gets. With Redis: ONE round
        trip for all of them (the limits library's script, pipelined), so an intake group
        pays one, not one per order."""
        try:
            if self.redis is not None and len(callers) > 1:
                admitted = self._hit_pipelined(callers)
            else:
                admitted = [self.limiter.hit(self.item, "orders", c) for c in callers]
            return [None if ok else RateLimited(self._retry_after(c)) for c, ok in zip(callers, admitted)]
        except Exception as exc:  # noqa: BLE001 - fail open, see the class docstring
            self._warn("rate limit not checked: its storage failed; letting the order through", exc)
            return [None] * len(callers)

    def _hit_pipelined(self, callers: list[str]) -> list[bool]:
        """`MovingWindowRateLimiter.hit` for each caller, as RedisStorage.acquire_entry runs it,
        in one pipeline (the script runs atomically per caller, in order)."""
        storage = self.redis
        now, expiry = time.time(), self.item.get_expiry()
        with storage.get_connection().pipeline(transaction=False) as pipe:
            for caller in callers:
                key = storage.prefixed_key(self.item.key_for("orders", caller))
                storage.lua_acquire_moving_window([key], [now, self.item.amount, expiry, 1], client=pipe)
            return [bool(ok) for ok in pipe.execute()]

    def _retry_after(self, caller: str) -> int:
        reset_at, _ = self.limiter.get_window_stats(self.item, "orders", caller)
        return max(1, math.ceil(reset_at - time.time()))


class QueueCap:
    """At most about `cap` accepted orders not yet `submitted`, across the deployment.

    The count comes from the database (the orders' status index) at most every
    `refresh_s`, by the first submission that finds it stale (the others meanwhile use
    the count they have); the orders this process admitted since are added to it. So one
    process never overshoots by itself, and the deployment overshoots the cap by at most
    what the OTHER processes admit within one refresh interval (plus a group commit in
    flight): at 3,600 orders/s across the deployment and 0.2 s, about 720 orders.
    If the database cannot be read the last count stands (the order will meet the
    database's failure itself when it is stored).
    """

    def __init__(self, engine: Engine, cap: int, refresh_s: float = QUEUE_COUNT_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.cap, self.refresh_s, self._clock = engine, cap, refresh_s, clock
        self._count = 0
        self._admitted_since = 0
        self._read_at = -math.inf
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._warn = _Warner()

    def admit(self) -> None:
        """Take one place for a new order; Overloaded (nothing stored) when none is left."""
        if self._clock() - self._read_at >= self.refresh_s and self._refreshing.acquire(blocking=False):
            try:
                self._refresh()
            finally:
                self._refreshing.release()
        with self._lock:
            if self._count + self._admitted_since >= self.cap:
                raise Overloaded(OVERLOADED_RETRY_AFTER_S)
            self._admitted_since += 1

    def release(self) -> None:
        """Give back a place taken by `admit` for an order that was then not stored."""
        with self._lock:
            self._admitted_since = max(0, self._admitted_since - 1)

    def _refresh(self) -> None:
        started = self._clock()
        try:
            count = count_unsubmitted(self.engine, self.cap + 1)
        except SQLAlchemyError as exc:
            self._warn("queued orders not counted: the database failed; using the last count", exc)
            return
        with self._lock:
            self._count, self._admitted_since, self._read_at = count, 0, started

