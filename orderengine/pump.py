"""The pump: finds the orders whose next step is due and hands them over in batches.

Two sources of due work, one thread:
  - the database: orders nobody holds whose `work_due_at` has come (new orders,
    and orders handed back or taken over from a dead worker), claimed many at a
    time (`OrderStore.claim_due`) when a queue message says there is new work, or
    every CLAIM_POLL_S in case a message was lost;
  - this worker's timer: orders it holds that wait for a retry backoff, a
    confirmation poll, the throttle or a re-check.
Due times on the timer are rounded up to a GRID_S grid, so orders that fall due
at about the same time go out as one batch. Rounding up keeps every wait at
least as long as asked (a retry backoff is never shortened).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from typing import Callable

from orderengine.clock import after_ms
from orderengine.execution import Held, OrderExecutor
from orderengine.store import OrderStore

log = logging.getLogger(__name__)

CLAIM_BATCH = 500     # orders taken from the database in one statement
CLAIM_POLL_S = 0.5    # look in the database this often even without a queue message
CLAIM_GAP_S = 0.01    # and no more often than this, however many messages come: bigger batches
GRID_S = 0.02         # timer resolution: due times are rounded up to it
DB_RETRY_S = 1.0      # after a failed claim or re-read
BUSY_RECHECK_S = 0.05  # a worker too busy to claim looks again this soon


class Pump:
    def __init__(self, store: OrderStore, executor: OrderExecutor, worker_id: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.executor = executor
        self.worker_id = worker_id
        self._clock = clock
        self._heap: list[tuple[float, int, Held]] = []
        self._latest: dict[str, int] = {}  # order id -> its one live entry on the heap
        self._count = itertools.count()
        self._next_expiry = 0.0
        self._cond = threading.Condition()
        self._claim_wanted = True
        self._next_claim = 0.0
        self._last_claim = -CLAIM_GAP_S
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="pump", daemon=True)

    # --- what others call -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """There is new work in the database: claim it now."""
        with self._cond:
            self._claim_wanted = True
            self._cond.notify()

    def later(self, orders: list[Held], seconds: float) -> None:
        """Run these held orders' next step after `seconds` (rounded up to the grid). An
        order has one place on the timer: a new one replaces the one it had."""
        due = math.ceil((self._clock() + max(0.0, seconds)) / GRID_S) * GRID_S
        with self._cond:
            head = self._heap[0][0] if self._heap else math.inf
            for held in orders:
                n = next(self._count)
                self._latest[held.id] = n
                heapq.heappush(self._heap, (due, n, held))
            if due < head:
                self._cond.notify()

    @property
    def waiting(self) -> int:
        """Orders this worker holds on its timer."""
        with self._cond:
            return len(self._latest)

    # --- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._has_work():
                    self._cond.wait(self._timeout())
                if self._stopped:
                    return
                due = self._pop_due()
                claim = self._claim_is_due(self._clock())
                if claim:
                    self._claim_wanted = False
            batch = self._reread([h for h in due if h.reload]) + [h for h in due if not h.reload]
            if claim:
                batch += self._claim()
            if batch:
                try:
                    self.executor.submit(batch)
                except Exception:  # never let the loop die: the orders are re-read and run again
                    log.exception("handing over a batch failed")
                    for held in batch:
                        held.reload = True
                    self.later(batch, DB_RETRY_S)

    def _claim_is_due(self, now: float) -> bool:
        """The poll's time has come, or a wake-up came at least CLAIM_GAP_S after the last claim."""
        return now >= self._next_claim or (self._claim_wanted and now >= self._last_claim + CLAIM_GAP_S)

    def _has_work(self) -> bool:
        now = self._clock()
        return self._claim_is_due(now) or bool(self._heap and self._heap[0][0] <= now)

    def _timeout(self) -> float:
        until = self._next_claim
        if self._claim_wanted:
            until = min(until, self._last_claim + CLAIM_GAP_S)
        if self._heap:
            until = min(until, self._heap[0][0])
        return max(0.0, until - self._clock())

    def _pop_due(self) -> list[Held]:
        now = self._clock()
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, n, held = heapq.heappop(self._heap)
            if self._latest.get(held.id) == n:  # else replaced by a later entry
                del self._latest[held.id]
                due.append(held)
        return due

    def _claim(self) -> list[Held]:
        self._last_claim = self._clock()
        self._next_claim = self._last_claim + CLAIM_POLL_S
        if self._last_claim >= self._next_expiry:
            self._next_expiry = self._last_claim + CLAIM_POLL_S
            self._expire()
        if self.executor.busy:  # enough to do: leave new orders to the other workers for now
            self._next_claim = self._last_claim + BUSY_RECHECK_S
            return []
        try:
            # an order whose transaction may be out on a venue not loaded here is left to a
            # worker that has it, until that venue's validity window has passed (execution.py)
            rows = self.store.claim_due(self.worker_id, CLAIM_BATCH, venues=self.executor.venue_names,
                                        unloaded_since=after_ms(-self.executor.unloaded_window_s * 1000))
        except Exception as exc:  # the database is away: look again shortly
            log.warning("claiming due orders failed", extra={"error": str(exc)})
            self._next_claim = self._clock() + DB_RETRY_S
            return []
        if len(rows) == CLAIM_BATCH:
            self.wake()  # there is more
        return [Held.of(r) for r in rows]

    def _expire(self) -> None:
        try:
            self.executor.expire_overdue()
        except Exception as exc:  # the database is away: the next look does it
            log.warning("expiring overdue orders failed", extra={"error": str(exc)})

    def _reread(self, orders: list[Held]) -> list[Held]:
        """Orders whose last step broke: their state as the database has it now
        (dropped where the token moved on: another worker has them)."""
        if not orders:
            return []
        try:
            rows = self.store.held([(h.id, h.token) for h in orders])
        except Exception as exc:
            log.warning("re-reading orders failed", extra={"error": str(exc)})
            self.later(orders, DB_RETRY_S)
            return []
        before = {h.id: h for h in orders}
        fresh = [Held.of(r) for r in rows]
        for held in fresh:  # what the executor learnt about the order stays with it
            old = before[held.id]
            held.failures, held.last_failure, held.alone = old.failures, old.last_failure, old.alone
        return fresh
