"""MAX_ORDERS_PER_MINUTE: at most N orders start executing in any 60 s.

A sliding log of start times: in Redis (shared by every worker) or in this
process. `acquire` either takes a slot (returns 0) or says how many seconds
until one frees up, so the caller reschedules instead of sleeping.
"""
from __future__ import annotations

import collections
import threading
import time
import uuid

WINDOW_S = 60.0
KEY = "orderengine:throttle:starts"


class NoThrottle:
    def acquire(self) -> float:
        return 0.0


class MemoryThrottle:
    def __init__(self, per_minute: int, clock=time.time) -> None:
        self.limit = per_minute
        self._clock = clock
        self._starts: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        now = self._clock()
        with self._lock:
            while self._starts and self._starts[0] <= now - WINDOW_S:
                self._starts.popleft()
            if len(self._starts) < self.limit:
                self._starts.append(now)
                return 0.0
            return self._starts[0] + WINDOW_S - now


class RedisThrottle:
    """The log's clock is Redis's (TIME), so workers whose clocks differ share one window."""

    def __init__(self, client, per_minute: int, clock=None, key: str = KEY) -> None:
        self.limit = per_minute
        self._client = client
        self._clock = clock
        self._key = key

    def acquire(self) -> float:
        import redis

        with self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._key)
                    now = self._clock() if self._clock else _redis_now(pipe)
                    in_window = pipe.zrangebyscore(self._key, now - WINDOW_S, "+inf",
                                                   start=0, num=1, withscores=True)
                    count = pipe.zcount(self._key, now - WINDOW_S, "+inf")
                    if count >= self.limit:
                        pipe.unwatch()
                        return min(WINDOW_S, max(0.001, in_window[0][1] + WINDOW_S - now))
                    pipe.multi()
                    pipe.zremrangebyscore(self._key, "-inf", now - WINDOW_S)
                    pipe.zadd(self._key, {uuid.uuid4().hex: now})
                    pipe.expire(self._key, int(WINDOW_S) + 5)
                    pipe.execute()
                    return 0.0
                except redis.WatchError:
                    continue


def _redis_now(client) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def build_throttle(per_minute: int | None, redis_client=None):
    if not per_minute:
        return NoThrottle()
    if redis_client is None:
        return MemoryThrottle(per_minute)
    return RedisThrottle(redis_client, per_minute)
