"""The task queue (Huey) and the timer that feeds it.

Huey moves steps between processes: Redis when REDIS_URL is set, otherwise a
queue in this process; both are priority queues (in-flight steps first). Huey's own scheduler wakes once a second, too coarse
for a 500 ms retry backoff, so delayed steps wait in `Waker`, this process's
timer, and enter the queue when due. Nothing here is the source of truth:
a step lost with a killed process is found again by the sweeper (sweeper.py).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

from huey import MemoryHuey, PriorityRedisHuey
from huey.storage import MemoryStorage

log = logging.getLogger(__name__)

QUEUE_NAME = "orderengine"
#: Steps of orders already in flight go before new orders: finishing what has started keeps
#: quotes fresh and latency low when a burst of orders queues up.
PRIORITY_IN_FLIGHT = 10
PRIORITY_NEW_ORDER = 0


class BlockingMemoryStorage(MemoryStorage):
    """Huey's memory storage, but a consumer waits on a condition instead of
    polling with a back-off that grows to seconds."""
    blocking = True

    def __init__(self, *args, read_timeout: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ready = threading.Condition(self._lock)
        self.read_timeout = read_timeout

    def enqueue(self, data, priority=None):
        with self._ready:
            super().enqueue(data, priority)
            self._ready.notify()

    def dequeue(self):
        with self._ready:
            data = super().dequeue()
            if data is None:
                self._ready.wait(self.read_timeout)
                data = super().dequeue()
            return data


class InProcessHuey(MemoryHuey):
    storage_class = BlockingMemoryStorage


def build_huey(redis_client=None):
    """Redis (shared by every process) when a client is given, else in-process."""
    if redis_client is not None:
        return PriorityRedisHuey(QUEUE_NAME, connection_pool=redis_client.connection_pool, results=False,
                                 utc=True, blocking=True, read_timeout=1)
    return InProcessHuey(QUEUE_NAME, results=False, utc=True)


class Waker:
    """Calls functions after a delay, on one thread, in due order. A call that
    raises (the queue is down) is tried again a second later, so a delayed
    step is never dropped while this process lives."""

    def __init__(self, retry_after: float = 1.0) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._retry_after = retry_after
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="waker", daemon=True)
        self._thread.start()

    def after(self, seconds: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, seconds), next(self._counter), fn))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception as exc:
                log.warning("delayed step could not be queued; trying again", extra={"error": str(exc)})
                self.after(self._retry_after, fn)
