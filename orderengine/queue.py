"""The task queue (Huey): wake-ups for the workers, not the orders themselves.

A message on the queue says "there are due orders in the database"; the worker
that takes it claims them there, many at a time (pump.py). Redis when REDIS_URL
is set, otherwise a queue in this process. Nothing here is the source of truth:
a message lost with Redis or a killed process costs at most CLAIM_POLL_S of
delay, since every worker also looks in the database on its own.
"""
from __future__ import annotations

import logging
import threading

from huey import MemoryHuey, PriorityRedisHuey
from huey.storage import MemoryStorage

log = logging.getLogger(__name__)

QUEUE_NAME = "orderengine"
#: Wake-ups for orders already in flight (hand-back, takeover) go before those for new orders.
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
