"""Nothing stuck, nothing lost: heartbeats, the sweep, and hand-back.

The queue is not the source of truth (a killed Huey consumer loses what it
had dequeued); the `orders` table is. Each worker process beats a heartbeat
row; every order names the worker holding its next step, or none while the
step waits in the shared queue. The sweep, run by every worker at start and
every few seconds, takes over orders held by a worker that stopped beating,
and re-queues orders that sat unclaimed in the queue far too long. Taking
over swaps the order's work token, so the old holder, if it was only slow,
can no longer write to the order.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Callable

import sqlalchemy as sa

from orderengine.clock import after_ms, utcnow
from orderengine.config import Settings
from orderengine.lifecycle import ACTIVE
from orderengine.models import orders, workers
from orderengine.store import OrderStore, new_token

log = logging.getLogger(__name__)

RECONNECT_GRACE_MS = 1000  # after a Redis outage: steps overdue by this much are re-queued
BACKLOG_PATIENCE = 10      # while the queue is busy, a step is lost only when ten times as late


class Sweeper:
    def __init__(self, settings: Settings, store: OrderStore, worker_id: str,
                 enqueue: Callable[[str, str, dict | None], None], redis_client=None,
                 queue_size: Callable[[], int] = lambda: 0) -> None:
        self.settings = settings
        self.queue_size = queue_size
        self.redis = redis_client
        self._redis_was_down = False
        self._redis_run_id: str | None = None
        self.store = store
        self.engine = store.writer  # every transaction here writes
        self.worker_id = worker_id
        self.enqueue = enqueue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.beat()
        self.forget_dead_local_workers()
        # An in-process queue starts empty: whatever the last process had queued is lost.
        self.sweep(lost_after_ms=0 if self.settings.embedded else None)
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self._thread.start()

    def stop(self, hand_back: bool = True) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if hand_back:
            self.hand_back()
        with self.engine.begin() as conn:
            conn.execute(sa.delete(workers).where(workers.c.id == self.worker_id))

    def _loop(self) -> None:
        interval = self.settings.sweep_interval_ms / 1000
        while not self._stop.wait(interval):
            try:
                self.beat()
                self.sweep(lost_after_ms=RECONNECT_GRACE_MS if self._redis_came_back() else None)
            except Exception as exc:  # the database may be away; try again next round
                log.warning("sweep failed", extra={"error": str(exc)})

    def _redis_came_back(self) -> bool:
        """Redis keeps no queue across a restart: when it answers again after an
        outage, steps queued before are presumed lost without waiting them out."""
        if self.redis is None:
            return False
        try:
            run_id = self._redis_run()
        except Exception:
            self._redis_was_down = True
            return False
        # a restart between two sweeps shows as a new run_id even if no ping ever failed
        restarted = self._redis_run_id is not None and run_id != self._redis_run_id
        self._redis_run_id = run_id
        came_back, self._redis_was_down = self._redis_was_down or restarted, False
        if came_back:
            log.warning("redis is back; re-queueing steps that may have been lost with it")
        return came_back

    # --- the pieces --------------------------------------------------------------

    def beat(self) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(sa.update(workers).where(workers.c.id == self.worker_id)
                                .values(last_seen=now)).rowcount
            if not done:
                conn.execute(sa.insert(workers).values(id=self.worker_id, host=socket.gethostname(),
                                                       pid=os.getpid(), started_at=now, last_seen=now))

    def forget_dead_local_workers(self) -> None:
        """A worker on this host whose process is gone is dead now, not in ten
        seconds: after `kill -9` and a restart its orders resume at once."""
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(workers.c.id, workers.c.pid)
                                .where(workers.c.host == socket.gethostname(),
                                       workers.c.id != self.worker_id)).all()
            dead = [r.id for r in rows if not _pid_alive(r.pid)]
            if dead:
                conn.execute(sa.delete(workers).where(workers.c.id.in_(dead)))
                log.info("forgot dead workers on this host", extra={"workers": dead})

    def sweep(self, lost_after_ms: int | None = None) -> int:
        """Take over orders of dead workers, and re-queue steps overdue by
        LOST_TASK_AFTER_MS (by ten times that while the queue holds a backlog: a
        step waiting its turn is not lost), or by `lost_after_ms` when given."""
        now = utcnow()
        if lost_after_ms is None:
            lost_after_ms = self.settings.lost_task_after_ms
            if not self._queue_is_empty():
                lost_after_ms *= BACKLOG_PATIENCE
        lost_before = after_ms(-lost_after_ms, now)
        stalled = self.store.orders_needing_work(
            dead_before=after_ms(-self.settings.worker_dead_after_ms, now), lost_before=lost_before)
        taken = 0
        for order_id, old_token in stalled:
            token = new_token()
            with self.engine.begin() as conn:
                won = conn.execute(sa.update(orders)
                                   .where(orders.c.id == order_id, orders.c.work_token == old_token,
                                          orders.c.status.in_([s.value for s in ACTIVE]))
                                   .values(work_token=token, work_owner=None, work_due_at=now)).rowcount
            if won:
                self.enqueue(order_id, token, None)
                taken += 1
                log.warning("resuming an order whose work was lost", extra={"order_id": order_id})
        return taken

    def _queue_is_empty(self) -> bool:
        try:
            return self.queue_size() == 0
        except Exception:  # the queue is away: whatever it held may be lost
            return True

    def _redis_run(self) -> str | None:
        """Redis's run id (new at every restart); None where INFO is not offered."""
        import redis

        try:
            return self.redis.info("server").get("run_id")
        except redis.ResponseError:
            self.redis.ping()
            return None

    def hand_back(self) -> int:
        """On a graceful stop: put the orders this worker holds back on the
        shared queue (each keeps its due time), so another worker goes on."""
        with self.engine.begin() as conn:
            held = conn.execute(sa.select(orders.c.id, orders.c.work_token)
                                .where(orders.c.work_owner == self.worker_id)).all()
            conn.execute(sa.update(orders).where(orders.c.work_owner == self.worker_id)
                         .values(work_owner=None))
        for row in held:
            try:
                self.enqueue(row.id, row.work_token, None)
            except Exception as exc:  # the sweep of another worker will find it
                log.warning("hand-back could not queue an order", extra={"order_id": row.id, "error": str(exc)})
        if held:
            log.info("handed back orders in flight", extra={"count": len(held)})
        return len(held)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
