"""Nothing stuck, nothing lost: heartbeats, the takeover of dead workers' orders, hand-back.

The queue carries only wake-ups; the `orders` table is the source of truth for
what still has to happen. An order that no worker holds and whose step is due is
claimed by the next worker that looks (pump.py), whatever happened to the queue.
An order a worker holds names that worker; each worker process beats a heartbeat
row while its pump runs. The sweep, run by every worker at start and every few
seconds, releases the orders of a worker that stopped beating: it swaps their work
token, so the old holder, if it was only slow, can no longer write to them.

Liveness is on one clock, the database's: a heartbeat is stamped with the
database's time and judged against the database's time, so hosts whose clocks
disagree by any amount judge each other right. The heartbeat has a thread of its
own: a sweep slowed by a busy database cannot make a healthy worker look dead.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from typing import Callable

import sqlalchemy as sa

from orderengine.clock import utcnow
from orderengine.config import Settings
from orderengine.db import database_now
from orderengine.models import orders, workers
from orderengine.store import OrderStore, new_token

log = logging.getLogger(__name__)

_TAKE_OVER = (sa.update(orders)
              # a terminal order has no token: the token alone says the order is still active
              .where(orders.c.id == sa.bindparam("b_id"), orders.c.work_token == sa.bindparam("b_token"))
              .values(work_token=sa.bindparam("v_token"), work_owner=None, work_due_at=sa.bindparam("v_due")))


class Sweeper:
    def __init__(self, settings: Settings, store: OrderStore, worker_id: str,
                 wake: Callable[[], None], alive: Callable[[], bool] = lambda: True,
                 wake_others: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.engine = store.writer  # every transaction here writes
        self.worker_id = worker_id
        self.wake = wake
        self.wake_others = wake_others or wake
        self.alive = alive
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.beat()
        self.forget_dead_local_workers()
        self.sweep()
        self._threads = [threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True),
                         threading.Thread(target=self._loop, name="sweeper", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, hand_back: bool = True) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if hand_back:
            self.hand_back()
        with self.engine.begin() as conn:
            conn.execute(sa.delete(workers).where(workers.c.id == self.worker_id))

    @property
    def beat_interval_s(self) -> float:
        """Often enough that three beats in a row can fail before the others judge us dead."""
        return min(self.settings.sweep_interval_ms, self.settings.worker_dead_after_ms / 4) / 1000

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.beat_interval_s):
            if not self.alive():  # a worker whose pump died must look dead to the others
                continue
            try:
                self.beat()
            except Exception as exc:  # the database may be away; beat again next round
                log.warning("heartbeat failed", extra={"error": str(exc)})

    def _loop(self) -> None:
        interval = self.settings.sweep_interval_ms / 1000
        while not self._stop.wait(interval):
            try:
                self.sweep()
                self.store.purge_idempotency_keys()
            except Exception as exc:  # the database may be away; try again next round
                log.warning("sweep failed", extra={"error": str(exc)})

    # --- the pieces --------------------------------------------------------------

    def beat(self) -> None:
        """Stamp this worker's heartbeat with the database's time."""
        with self.engine.begin() as conn:
            now = database_now(conn)
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

    def sweep(self) -> int:
        """Release the orders of workers whose heartbeat stopped more than
        WORKER_DEAD_AFTER_MS ago by the database's clock, each under a new token and due
        now (the database's now); how many."""
        with self.engine.connect() as conn:
            now = database_now(conn)
        stalled = self.store.orders_needing_work(
            dead_before=now - dt.timedelta(milliseconds=self.settings.worker_dead_after_ms))
        if not stalled:
            return 0
        with self.engine.begin() as conn:
            due = min(now, utcnow())  # due by the database's clock and by this host's
            taken = conn.execute(_TAKE_OVER, [{"b_id": oid, "b_token": token, "v_token": new_token(), "v_due": due}
                                              for oid, token in stalled]).rowcount
        log.warning("took over orders of a worker that stopped", extra={
            "orders": taken, "order_ids": [oid for oid, _ in stalled][:20]})
        self.wake()
        return taken

    def hand_back(self) -> int:
        """On a graceful stop: release the orders this worker holds (each keeps its
        token and due time), so the next worker that claims goes on with them."""
        released = self.store.release(self.worker_id)
        if released:
            try:
                self.wake_others()
            except Exception as exc:  # the others find them on their next look all the same
                log.warning("hand-back could not wake the other workers", extra={"error": str(exc)})
            log.info("handed back orders in flight", extra={"count": released})
        return released


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
