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

No order held and forgotten. An order this worker holds in the database is, in
this process, on the timer or in the executor (a step queued or running, quotes
on their way: `OrderExecutor.in_flight`). Two things could break that, and the
worker's heartbeat would keep the sweep from taking such an order over, so it
would wait forever: a claim that PostgreSQL committed while the connection died
before the answer came (its outcome is unknown), or any bug that drops an order.
  - After a claim that failed, the pump asks the database which orders this worker
    holds and adopts those it does not know (`OrderStore.adopt`): at once, and again
    after each look until the database answers.
  - Every AUDIT_S the pump does the same as a self-audit; an order found unknown
    by two audits in a row (not one that a step was just handing over) is adopted,
    with a warning naming it.
Only this thread starts work on an order (claims, the timer, adoptions), and it
adopts only orders neither on the timer nor in the executor, so no two threads of
a worker run one order. Adopting gives the order a new work token: were a step of
the old token still running after all, its writes would find the order moved on.
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
AUDIT_S = 5.0         # compare the orders held in the database with those known this often


class Pump:
    def __init__(self, store: OrderStore, executor: OrderExecutor, worker_id: str,
                 clock: Callable[[], float] = time.monotonic, audit_s: float | None = None) -> None:
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
        self._audit_s = AUDIT_S if audit_s is None else audit_s
        self._next_audit = self._clock() + self._audit_s
        self._suspects: set[str] = set()  # held in the database, unknown here, at the last audit
        self._claim_unsure = False        # the last claim failed: it may have committed
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
            # nothing in hand here (handed over, or back on the timer): what the executor
            # and the timer know is all this worker knows
            if self._claim_unsure:
                self._adopt_lost_claim()
            if self._clock() >= self._next_audit:
                self._audit()

    def _claim_is_due(self, now: float) -> bool:
        """The poll's time has come, or a wake-up came at least CLAIM_GAP_S after the last claim."""
        return now >= self._next_claim or (self._claim_wanted and now >= self._last_claim + CLAIM_GAP_S)

    def _has_work(self) -> bool:
        now = self._clock()
        return self._claim_is_due(now) or now >= self._next_audit or bool(self._heap and self._heap[0][0] <= now)

    def _timeout(self) -> float:
        until = min(self._next_claim, self._next_audit)
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
                                        unloaded_since=after_ms(-self.executor.unloaded_window_s * 1000),
                                        send_grace_s=self.executor.send_grace_s)
        except Exception as exc:  # the database is away: look again shortly
            # PostgreSQL may have committed the claim before the connection died: the pump
            # looks for what this worker holds there (`_adopt_lost_claim`, after any failure:
            # asking is cheap)
            log.warning("claiming due orders failed", extra={"error": str(exc)})
            self._claim_unsure = True
            self._next_claim = self._clock() + DB_RETRY_S
            return []
        if len(rows) == CLAIM_BATCH:
            self.wake()  # there is more
        return [Held.of(r) for r in rows]

    def _known(self) -> set[str]:
        """The orders this worker knows it holds: in the executor, then on the timer (in
        that order: a step puts an order back on the timer before it lets go of it)."""
        known = self.executor.in_flight()
        with self._cond:
            known.update(self._latest)
        return known

    def _adopt_lost_claim(self) -> bool:
        """After a failed claim: adopt the orders the database says this worker holds and
        it does not know (those the claim took); False if the database cannot be asked."""
        try:
            unknown = self.store.held_ids(self.worker_id) - self._known()
            if unknown:
                self._adopt(unknown, "a claim whose answer was lost took orders; running them")
        except Exception as exc:
            log.warning("looking for the orders of a failed claim failed", extra={"error": str(exc)})
            return False
        self._claim_unsure = False
        return True

    def _audit(self) -> None:
        """The self-audit: orders held in the database that this worker has not known
        of twice in a row are adopted (once may be a step handing an order over)."""
        self._next_audit = self._clock() + self._audit_s
        try:
            unknown = self.store.held_ids(self.worker_id) - self._known()
            forgotten = unknown & self._suspects
            self._suspects = unknown - forgotten
            if forgotten:
                self._adopt(forgotten, "orders held in the database were unknown to this worker; adopting them")
        except Exception as exc:  # the database is away: the next audit does it
            log.warning("the self-audit of held orders failed", extra={"error": str(exc)})

    def _adopt(self, order_ids: set[str], message: str) -> None:
        """Take these orders up again (new token, due now) and put them on the timer, due
        now; CLAIM_BATCH at a time, each batch on the timer as soon as it is adopted."""
        ids = sorted(order_ids)
        for i in range(0, len(ids), CLAIM_BATCH):
            adopted = [Held.of(r) for r in self.store.adopt(self.worker_id, ids[i:i + CLAIM_BATCH])]
            if adopted:  # (an order that ended or was let go meanwhile is not)
                log.warning(message, extra={"order_ids": [h.id for h in adopted][:50], "orders": len(adopted)})
                self.later(adopted, 0)

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
            rows = self.store.held([(h.id, h.token) for h in orders], owner=self.worker_id)
        except Exception as exc:
            log.warning("re-reading orders failed", extra={"error": str(exc)})
            self.later(orders, DB_RETRY_S)
            return []
        before = {h.id: h for h in orders}
        fresh = [Held.of(r) for r in rows]
        for held in fresh:  # what the executor learnt about the order stays with it
            held.keep(before[held.id])
        return fresh
