"""One process's wiring: built once from Settings, shared by API and worker.

The API side needs the store, the bus, the venues and a way to queue a step;
a worker additionally runs the executor, its I/O threads, the timer and the
sweeper. Backends (SQLite/PostgreSQL, in-process/Redis) are chosen here and
nowhere else.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from orderengine.admission import QueueCap, RateLimit
from orderengine.bus import create_bus
from orderengine.metrics import measured_venues
from orderengine.config import Settings
from orderengine.db import create_db_engine, ping
from orderengine import failpoints
from orderengine.execution import OrderExecutor, new_worker_id
from orderengine.intake import Intake
from orderengine.plugins import VenueRegistry, load_venues
from orderengine.pump import Pump
from orderengine.queue import PRIORITY_IN_FLIGHT, PRIORITY_NEW_ORDER, build_huey
from orderengine.routing import QuoteFetcher
from orderengine.socketslots import SocketSlots
from orderengine.store import OrderStore
from orderengine.sweeper import Sweeper
from orderengine.throttle import build_throttle
from orderengine.upkeep import VenueUpkeep

log = logging.getLogger(__name__)

REDIS_CONNECT_TIMEOUT_S = 2
REDIS_SOCKET_TIMEOUT_S = 5    # any Redis command; longer than every blocking wait we issue (1 s)
REDIS_POOL_SIZE = 200         # connections one process may hold; more wait for one to come back
REDIS_HEALTH_CHECK_S = 15     # a connection idle this long is PINGed before it is used


class Runtime:
    def __init__(self, settings: Settings, redis_client: Any = None,
                 registry: VenueRegistry | None = None) -> None:
        self.settings = settings
        failpoints.arm(dict(settings.failpoints))  # a test facility: none unless ORDERENGINE_FAILPOINTS
        self.engine = create_db_engine(settings.database_url, pool_size=settings.worker_concurrency + 5,
                                       connect_timeout_s=settings.db_connect_timeout_s,
                                       statement_timeout_ms=settings.db_statement_timeout_ms)
        if redis_client is None and settings.redis_url:
            # every call out has a time limit: this pool is shared by the bus (whose pub/sub
            # reader waits 1 s at a time, inside the limit) and by Huey (blocking pops of 1 s).
            # A blocking pool: under gevent a burst of socket handshakes wants more connections
            # at once than the pool holds; they wait their turn (up to the command limit)
            # instead of failing with MaxConnectionsError.
            pool = redis.BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=REDIS_POOL_SIZE, timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                health_check_interval=REDIS_HEALTH_CHECK_S)
            redis_client = redis.Redis(connection_pool=pool)
        self.redis = redis_client
        self.bus = create_bus(redis_client)
        self.store = OrderStore(self.engine, self.bus)
        # SPEC §6: how many orders per caller, how many waiting, how many sockets
        self.rate_limit = RateLimit(settings.rate_limit_per_minute, redis_client, settings.redis_url)
        self.queue_cap = QueueCap(self.engine, settings.max_queued_orders)
        self.socket_slots = SocketSlots(settings.max_sockets_per_process, settings.max_sockets_per_key,
                                        redis_client)
        self.intake = Intake(self.store, self.queue_new_orders, key_ttl_s=settings.idempotency_ttl_s,
                             queue_cap=self.queue_cap, rate_limit=self.rate_limit)  # group commit
        self.huey = build_huey(redis_client)
        self.registry = registry if registry is not None else load_venues(settings)
        self._wake = self.huey.task(name="wake", retries=0)(self._run_wake)
        self.worker: WorkerServices | None = None
        self._worker_lock = threading.Lock()

    @property
    def venues(self):
        return self.registry.venues

    def queue_new_orders(self, orders: list[tuple[str, str]]) -> None:
        """Tell the workers that these (order_id, work token) pairs, just committed,
        are due: one message on the queue, whatever their number (raises if the
        queue is unreachable: the caller withdraws them). A worker that takes it
        claims every due order from the database."""
        self.wake_workers(priority=PRIORITY_NEW_ORDER)

    def wake_workers(self, priority: int = PRIORITY_IN_FLIGHT) -> None:
        """Ask one worker to look for due orders now (raises if the queue is unreachable)."""
        self.huey.enqueue(self._wake.s(priority=priority))

    def _run_wake(self) -> None:
        worker = self.worker
        if worker is not None:
            worker.pump.wake()

    def health(self) -> dict[str, dict[str, Any]]:
        """Each check's outcome. A failing check is named, never explained: an exception's
        text can carry a host, a user or worse (SPEC §6); the log has its class."""
        checks: dict[str, dict[str, Any]] = {}
        try:
            ping(self.engine)
            checks["database"] = {"ok": True}
        except Exception as exc:
            log.warning("health check failed", extra={"check": "database", "error": type(exc).__name__})
            checks["database"] = {"ok": False}
        if self.redis is not None:
            try:
                self.redis.ping()
                checks["redis"] = {"ok": True}
            except Exception as exc:
                log.warning("health check failed", extra={"check": "redis", "error": type(exc).__name__})
                checks["redis"] = {"ok": False}
        checks["venues"] = {"ok": bool(self.venues), "loaded": sorted(self.venues),
                            "failed": dict(self.registry.failures)}
        return checks

    def start_worker(self) -> "WorkerServices":
        """Start this process's worker services (once, however often called)."""
        with self._worker_lock:
            if self.worker is None:
                worker = WorkerServices(self)
                worker.start()
                self.worker = worker
        return self.worker

    def close(self) -> None:
        """Stop the worker services (handing back held orders) and release connections."""
        self.intake.close()
        with self._worker_lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()
        self.bus.close()
        self.engine.dispose()
        if self.redis is not None:
            self.redis.close()


class WorkerServices:
    """What a worker process runs beside Huey's consumer threads: the pump and the
    step threads, the quote fetcher, the sweeper and the venues' upkeep."""

    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.worker_id = new_worker_id()
        venues = measured_venues(runtime.venues)  # every call timed, every error counted
        self.fetcher = QuoteFetcher(venues, timeout_s=s.quote_timeout_ms / 1000)
        self.executor = OrderExecutor(s, runtime.store, venues, self.fetcher,
                                      build_throttle(s.max_orders_per_minute, runtime.redis),
                                      self._later, self.worker_id)
        self.pump = Pump(runtime.store, self.executor, self.worker_id)
        self.sweeper = Sweeper(s, runtime.store, self.worker_id, self.pump.wake, alive=lambda: self.pump.alive,
                               wake_others=runtime.wake_workers)
        self.upkeep = VenueUpkeep(runtime.venues)

    def _later(self, orders, seconds: float) -> None:
        self.pump.later(orders, seconds)

    def start(self) -> None:
        self.upkeep.run_once()
        self.sweeper.start()
        self.pump.start()
        self.upkeep.start()
        log.info("worker started", extra={"worker_id": self.worker_id})

    def stop(self, hand_back: bool = True) -> None:
        self.pump.stop()
        self.fetcher.close()  # in-flight quotes are dropped: the orders are handed back below
        self.executor.close(wait=True)
        self.upkeep.stop()
        self.sweeper.stop(hand_back=hand_back)
        log.info("worker stopped", extra={"worker_id": self.worker_id})

