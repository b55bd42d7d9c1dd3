"""Time limits on calls out to a venue, and a bound on the threads a hung venue can hold.

A venue plugin's methods block (network round trips) and cannot be interrupted:
a thread running one that hangs is gone until the call returns. So each venue
gets a few threads of its own (`VenueCalls`), and a caller waits for an answer
at most `timeout_s`. A call that outlives its limit is abandoned, not stopped:
its thread stays busy until the plugin returns. While every thread of a venue is
busy, a new call fails at once with VENUE_TIMEOUT instead of queueing behind
them, so a venue that hangs holds at most `threads` threads and no queue grows.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from orderengine.errors import VenueTimeout


class VenueCalls:
    """At most `threads` calls to one venue at a time, each waited for at most `timeout_s`."""

    def __init__(self, venue: str, threads: int, timeout_s: float, kind: str = "call") -> None:
        self.venue = venue
        self.threads = max(1, threads)
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(self.threads)
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=f"{kind}-{venue}")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Start `fn(*args)` on one of the venue's threads; VenueTimeout at once when all
        of them are still busy with earlier calls (nothing is queued behind them)."""
        if not self._slots.acquire(blocking=False):
            raise VenueTimeout(f"{self.venue}: all {self.threads} threads lent to it are still "
                               "waiting on earlier calls; not called")
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())  # when the plugin returns
        return future

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        """`fn(*args)`'s answer (or its exception), or VenueTimeout after the time limit."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        future = self.submit(fn, *args)
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            future.cancel()  # not started yet: never will be; running: it is abandoned
            raise VenueTimeout(f"{self.venue}.{getattr(fn, '__name__', 'call')} did not answer "
                               f"within {int(limit * 1000)} ms") from None

    @property
    def busy(self) -> int:
        """Threads now running (or abandoned in) a call."""
        return self.threads - self._slots._value  # noqa: SLF001 - a gauge, read without the lock

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
