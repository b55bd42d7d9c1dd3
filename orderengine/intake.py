"""Taking orders in: many concurrent POSTs share one commit and one queue push.

A request thread validates its order, hands it to this process's `Intake` and
waits. A writer thread takes whatever orders have arrived (more keep arriving
while the previous group is stored; it waits `window_s` for company at most),
inserts them all at once (one statement on PostgreSQL, one transaction on
SQLite: `OrderStore.create_many`), queues their first steps with ONE
`queue_new_orders` call, and only then wakes each waiting request with its own
answer; then it publishes their `pending` events in one round trip. So the 201
still means "committed and queued", at a fraction of a transaction per order.

If the queue cannot be reached the group's orders are withdrawn and each of
those clients gets a 503: nothing is stored that nobody will execute, and
nothing executes that the client was told failed. An order a worker got after
all (the queue took it and then the connection broke) is live: its answer is
201. If the database fails, every order of the group gets a 503 and none is
stored. An error that belongs to one order (a row the database refuses) is
found by storing the group's orders one by one, and stays that order's.

The unknown commit: when the connection dies while the insert or its COMMIT is
on its way, the server may have committed it or not. The writer then asks the
database, by id, which of the group's orders are stored (a new connection, a few
tries): those are answered 201 and queued like any other, and only those that
are not stored are inserted again (once) or answered 503. Only when the database
cannot be asked at all is the whole group answered 503 while some of it may be
stored (and then runs): that is logged with the ids, and a client that sent an
Idempotency-Key gets the true answer when it retries.

SPEC §6's limits refuse before anything is stored: a full queue (MAX_QUEUED_ORDERS,
`admission.QueueCap`) refuses an order before it joins a group (503 OVERLOADED), and
the writer counts a group against its callers' RATE_LIMIT_PER_MINUTE in one round trip
(`RateLimit.check_many`) and answers the ones over it 429 RATE_LIMITED.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

from orderengine import metrics
from orderengine.admission import QueueCap, RateLimit
from orderengine.clock import utcnow
from orderengine.errors import EngineError, IdempotencyKeyInUse, IdempotencyKeyReused, ServiceUnavailable
from orderengine.events import Event
from orderengine.failpoints import failpoint
from orderengine.schemas import OrderRequest
from orderengine.store import OrderStore, Work
from orderengine.logs import brief

log = logging.getLogger(__name__)

#: How long a writer waits for more orders to join a group once it holds one. None: under
#: load groups fill while the previous one is stored, and an order alone is not kept
#: waiting (bench intake on gevent workers: 2 ms 3,108 POST/s, 0.5 ms 3,526, 0 3,623).
GROUP_WINDOW_S = 0.0
#: At most this many orders in one group.
MAX_GROUP = 256
#: Writer threads per process. One makes the biggest groups and the least CPU per order:
#: under wrk -c32 on two processes, one writer made groups of ~10 at 0.66-0.72 ms of CPU per
#: POST, two made groups of ~6 at 0.72-0.88 ms and fewer POSTs per second (README, Intake).
WRITERS = 1
#: A writer with nothing to do for this long ends (a new order starts it again), so an
#: app that stops taking orders, or a test's throwaway app, leaves no thread behind.
IDLE_EXIT_S = 30.0

#: the caller (and owner) while AUTH is off: every client is one
ANYONE = ""
#: a key whose request has not answered yet is "in progress" (409) for at most this long;
#: after it, its stored order is live whatever happened to the request that made it
KEY_IN_PROGRESS_GRACE_S = 5

#: after a commit whose outcome is unknown, ask the database this often which orders it has
UNKNOWN_COMMIT_TRIES = 3
UNKNOWN_COMMIT_PAUSE_S = 0.2

_DB_UNAVAILABLE = "The database is not available; the order was not accepted."
_QUEUE_UNAVAILABLE = "The order queue is not available; the order was not accepted."


class _Ticket:
    """One order waiting for its group's commit: the request thread holds `_done`."""
    __slots__ = ("order_id", "request", "owner", "work", "key", "limit_key", "event", "replayed", "error",
                 "finished", "_done")

    def __init__(self, request: OrderRequest, key: "IdempotencyKey | None" = None,
                 limit_key: str | None = None, owner: str = "") -> None:
        self.order_id = ""  # the writer names the group's orders at once (see `_named`)
        self.request = request
        self.owner = owner
        self.work: Work | None = None
        self.key = key
        self.limit_key = limit_key  # whose RATE_LIMIT_PER_MINUTE this order counts against
        self.event: Event | None = None
        self.replayed = False
        self.error: BaseException | None = None
        self.finished = False
        self._done = threading.Lock()
        self._done.acquire()

    def finish(self, event: Event | None = None, error: BaseException | None = None) -> None:
        self.event, self.error, self.finished = event, error, True
        self._done.release()

    def replay(self, order_id: str) -> None:
        """Answered with the order its key made before: nothing new is created."""
        self.order_id, self.replayed = order_id, True
        self.finish()

    def wait(self) -> "Accepted":
        self._done.acquire()
        if self.error is not None:
            raise self.error
        return Accepted(self.order_id, self.replayed, self.event)


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key, scoped to its caller, with the request's fingerprint."""
    caller: str
    key: str
    fingerprint: str

    @classmethod
    def of(cls, caller: str, key: str, request: OrderRequest) -> "IdempotencyKey":
        body = json.dumps(request.to_dict(), sort_keys=True, separators=(",", ":"))
        return cls(caller, key, hashlib.sha256(body.encode()).hexdigest())


@dataclass(frozen=True)
class Accepted:
    """The answer to a submit: the order, and whether it is the earlier answer to the same key."""
    order_id: str
    replayed: bool = False
    event: Event | None = None  # the new order's `pending` event (None for a replay)


class Intake:
    """This process's door for new orders (one per Runtime; thread-safe)."""

    def __init__(self, store: OrderStore, queue_new_orders: Callable[[list[tuple[str, str]]], None],
                 window_s: float = GROUP_WINDOW_S, max_group: int = MAX_GROUP,
                 writers: int = WRITERS, idle_exit_s: float = IDLE_EXIT_S,
                 key_ttl_s: int = 86_400, queue_cap: "QueueCap | None" = None,
                 rate_limit: "RateLimit | None" = None) -> None:
        self.store = store
        self.queue_cap = queue_cap  # refuses a new order (Overloaded) before it is stored
        self.rate_limit = rate_limit  # checked for a whole group at once by the writer
        self.queue_new_orders = queue_new_orders
        self.key_ttl_s = key_ttl_s
        self.window_s, self.max_group, self.writers = window_s, max_group, writers
        self.idle_exit_s = idle_exit_s
        self._inbox: queue.SimpleQueue[_Ticket | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False

    def submit(self, request: OrderRequest, key: IdempotencyKey | None = None,
               limit_key: str | None = None, owner: str = ANYONE) -> Accepted:
        """Store the order (as `owner`'s) and queue its first step; returns its `pending` event
        once both are done. ServiceUnavailable when the database or the queue is away (nothing
        stored). With `limit_key`, the submission counts against that caller's rate limit (a
        replay too) and is refused with RateLimited over it; a new order is refused with
        Overloaded when the queue is full (`queue_cap`). Nothing is stored for a refusal."""
        if key is not None:
            known = self._replay(key)
            if known is not None:
                if limit_key is not None and self.rate_limit is not None:
                    self.rate_limit.check(limit_key)
                return known  # a replay stores nothing: answered even when the queue is full
        if self.queue_cap is not None:
            self.queue_cap.admit()
        ticket = _Ticket(request, key, limit_key if self.rate_limit is not None else None, owner)
        with self._lock:  # so every order handed in comes before the writers' stop marks
            if self._closed:
                raise ServiceUnavailable("The server is shutting down; the order was not accepted.")
            self._inbox.put(ticket)
        self._ensure_writers()
        return ticket.wait()

    def _replay(self, key: IdempotencyKey) -> Accepted | None:
        """The earlier answer to this key, or None when the key is new. A key sent before
        with another request is refused (422): it would be ambiguous which one to place."""
        record = self.store.idempotent_answer(key.caller, key.key)
        if record is None:
            return None
        if record.fingerprint != key.fingerprint:
            raise IdempotencyKeyReused("This Idempotency-Key was sent before with a different order; "
                                       "use a new key for a new order.")
        in_progress = record.status_code is None
        if in_progress and record.created_at > utcnow() - dt.timedelta(seconds=KEY_IN_PROGRESS_GRACE_S):
            raise IdempotencyKeyInUse("A request with this Idempotency-Key is in progress; try again shortly.")
        # an answered key, or one whose process died between the commit and the answer: its
        # order is stored, and due, so a worker runs it (the database is the queue)
        return Accepted(record.order_id, replayed=True)

    def close(self) -> None:
        """Stop the writers once the orders already handed in are done."""
        with self._lock:
            self._closed = True
            for _ in range(self._running):
                self._inbox.put(None)

    # --- writers ----------------------------------------------------------------------

    def _ensure_writers(self) -> None:
        if self._running >= self.writers:  # read without the lock: the common case
            return
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("The server is shutting down; the order was not accepted.")
            while self._running < self.writers:
                self._running += 1
                threading.Thread(target=self._write, name=f"intake-writer-{self._running}",
                                 daemon=True).start()

    def _write(self) -> None:
        while True:
            group = self._gather()
            if group is None:
                return
            try:
                self._commit(group)
            except BaseException as exc:  # never leave a request waiting for ever
                log.exception("intake writer failed")
                for ticket in group:
                    if not ticket.finished:
                        ticket.finish(error=exc)

    def _gather(self) -> list[_Ticket] | None:
        """The next group: the first order to arrive, everything already waiting, and
        whatever arrives within `window_s` after the first. None: this writer ends."""
        try:
            first = self._inbox.get(timeout=self.idle_exit_s)
        except queue.Empty:
            with self._lock:
                # count down first, then look: a ticket put after the look sees the lower
                # count and starts a writer (tickets are put before writers are ensured)
                self._running -= 1
                if self._inbox.empty():
                    return None
                self._running += 1
            return []
        if first is None:
            return None
        group = [first]
        deadline = time.monotonic() + self.window_s
        while len(group) < self.max_group:
            try:
                ticket = self._inbox.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    ticket = self._inbox.get(timeout=remaining)
                except queue.Empty:
                    break
            if ticket is None:  # close(): finish this group, then end
                self._inbox.put(None)
                break
            group.append(ticket)
        return group

    def _commit(self, group: list[_Ticket]) -> None:
        group = self._within_rate(group)
        if not group:
            return
        stored = self._store(group)
        made = [t for t in stored if t.event is not None]
        losers = [t for t in stored if t.event is None and not t.finished]  # their key was another request's
        live = self._queue(made) if made else []
        self._finish_keys([t for t in live if t.key is not None])
        failpoint("intake_committed")  # crash matrix: stored and queued, no 201 sent
        for t in live:  # answered first: publishing and logging need not delay the 201s
            t.finish(t.event)
        self._settle_keys(losers)
        if not live:
            return
        metrics.orders_created(len(live))
        self.store.bus.publish_many([t.event for t in live])  # best effort, as `publish`
        if log.isEnabledFor(logging.INFO):
            for t in live:
                log.info("order accepted", extra={"order_id": t.order_id, **t.event.data})

    def _within_rate(self, group: list[_Ticket]) -> list[_Ticket]:
        """The group's orders within their callers' rate limits (one round trip for the
        group); the others are answered RateLimited here and not stored."""
        counted = [t for t in group if t.limit_key is not None]
        if not counted:
            return group
        for t, refused in zip(counted, self.rate_limit.check_many([t.limit_key for t in counted])):
            if refused is not None:
                t.finish(error=refused)
                if self.queue_cap is not None:
                    self.queue_cap.release()  # its place in the queue was never used
        return [t for t in group if not t.finished]

    def _store(self, group: list[_Ticket]) -> list[_Ticket]:
        """Insert the group at once; the tickets stored (with their event), the others
        finished with their error."""
        try:
            self._insert(group)
            return group
        except (OperationalError, InterfaceError) as exc:  # the database is away: all of them
            log.error("orders not stored: database unavailable",
                      extra={"orders": len(group), "error": brief(exc, 300)})
            for t in group:
                t.finish(error=ServiceUnavailable(_DB_UNAVAILABLE))
            return []
        except Exception as exc:
            if len(group) > 1:  # something in one order: find it by storing them one by one
                log.warning("group insert failed; storing its orders one by one",
                            extra={"orders": len(group), "error": brief(exc, 300)})
                return [t for one in group for t in self._store([one])]
            log.error("order not stored", extra={"order_id": group[0].order_id, "error": brief(exc, 300)})
            group[0].finish(error=ServiceUnavailable(_DB_UNAVAILABLE)
                            if isinstance(exc, SQLAlchemyError) else exc)
            return []

    def _insert(self, group: list[_Ticket]) -> None:
        """The group in one go. When the connection died on the way (the outcome is
        unknown), the database is asked which orders it stored: those are kept; if none
        was and the pooled connection had died (a database restart), the insert is tried
        once more rather than answering 503."""
        new = [(t.order_id, t.request, t.work.token) for t in _named(group)]
        keys = [t.key for t in group]
        owners = [t.owner for t in group]
        try:
            events = self.store.create_many(new, keys, self.key_ttl_s, owners)
        except DBAPIError as exc:
            if not _outcome_unknown(exc):
                raise
            if self._keep_stored(group, self._stored_after_all(group, exc), exc):
                return  # committed after all: only the answer was lost
            if not exc.connection_invalidated:
                raise
            try:
                events = self.store.create_many(new, keys, self.key_ttl_s, owners)
            except IntegrityError:
                # the server finished the first COMMIT after it was asked: those rows are
                # there now (the ids are ours alone), so ask once more
                if self._keep_stored(group, self._stored_after_all(group, exc), exc):
                    return
                raise
        for t, event in zip(group, events):
            t.event = event

    def _keep_stored(self, group: list[_Ticket], stored: dict[str, Event], exc: BaseException) -> bool:
        """After a commit whose outcome was unknown: the tickets whose orders the database
        has take their `pending` event; the others (if any were stored) are answered 503.
        False when none was stored."""
        if not stored:
            return False
        log.warning("commit outcome unknown; the orders were stored",
                    extra={"orders": len(stored), "error": brief(exc, 300)})
        for t in group:
            t.event = stored.get(t.order_id)
            if t.event is None and t.key is None:  # not stored, and no key to explain why
                t.finish(error=ServiceUnavailable(_DB_UNAVAILABLE))
        return True

    def _stored_after_all(self, group: list[_Ticket], exc: BaseException) -> dict[str, Event]:
        """The `pending` events of the group's orders that the database has, after a commit
        whose outcome is unknown; raises (-> 503 for all) when it cannot be asked."""
        ids = [t.order_id for t in group]
        for attempt in range(UNKNOWN_COMMIT_TRIES):
            try:
                return self.store.first_events(ids)
            except SQLAlchemyError as again:
                if attempt + 1 == UNKNOWN_COMMIT_TRIES:
                    log.error("commit outcome unknown and the database cannot be asked: answering 503, "
                              "though these orders may be stored (and will then run)",
                              extra={"order_ids": ids[:50], "orders": len(ids), "error": brief(exc, 300)})
                    raise again
                time.sleep(UNKNOWN_COMMIT_PAUSE_S * (attempt + 1))
        return {}

    def _finish_keys(self, live: list[_Ticket]) -> None:
        """The keys of orders now live give their answer to retries from now on (until
        then a retry is told the request is in progress: the order might be withdrawn)."""
        if not live:
            return
        try:
            self.store.finish_idempotency_keys([(t.key.caller, t.key.key) for t in live])
        except SQLAlchemyError as exc:  # after KEY_IN_PROGRESS_GRACE_S they answer all the same
            log.warning("could not mark idempotency keys answered", extra={"error": brief(exc, 300)})

    def _settle_keys(self, losers: list[_Ticket]) -> None:
        """Tickets whose key another request holds were not stored: answer them with
        that request's answer (or 422 for another body)."""
        for t in losers:
            try:
                known = self._replay(t.key)
            except EngineError as exc:
                t.finish(error=exc)
                continue
            except SQLAlchemyError:
                t.finish(error=ServiceUnavailable(_DB_UNAVAILABLE))
                continue
            if known is None:  # its holder was withdrawn in the meantime
                t.finish(error=IdempotencyKeyInUse("A request with this Idempotency-Key is in "
                                                   "progress; try again shortly."))
            else:
                t.replay(known.order_id)

    def _queue(self, stored: list[_Ticket]) -> list[_Ticket]:
        """Queue the group's first steps in one call; on failure withdraw them. Returns the
        tickets whose orders are live (the others are answered 503 here)."""
        try:
            self.queue_new_orders([(t.order_id, t.work.token) for t in stored])
            return stored
        except Exception as exc:
            log.error("orders withdrawn: queue unavailable",
                      extra={"orders": len(stored), "error": brief(exc, 300)})
        live = []
        for t in stored:
            try:
                withdrawn = self.store.withdraw(t.order_id)
            except SQLAlchemyError:
                log.exception("could not withdraw an unqueued order; the sweep will run it",
                              extra={"order_id": t.order_id})
                withdrawn = False
            if withdrawn:
                t.finish(error=ServiceUnavailable(_QUEUE_UNAVAILABLE))
            else:  # a worker has it, or the sweep will: the order is live
                live.append(t)
        return live


def _outcome_unknown(exc: DBAPIError) -> bool:
    """The connection failed with the statement (or its COMMIT) possibly on the server:
    it may have been applied. (An error the server answered, such as a unique key
    violation, is an IntegrityError/ProgrammingError: then it surely was not.)"""
    return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))


def _named(group: list[_Ticket]) -> list[_Ticket]:
    """Give each order of the group its id and work token (random UUIDs, as uuid4 makes
    them) from ONE read of the OS's random source: os.urandom lets go of the GIL, and
    under load every thread that lets go of it waits to get it back."""
    raw = os.urandom(32 * len(group))
    now = utcnow()
    for i, t in enumerate(group):
        if not t.order_id:
            t.order_id = str(uuid.UUID(bytes=raw[32 * i:32 * i + 16], version=4))
            t.work = Work(str(uuid.UUID(bytes=raw[32 * i + 16:32 * i + 32], version=4)), None, now)
    return group


def submit_order(runtime, request: OrderRequest, idempotency_key: str | None = None,
                 caller: str = ANYONE, limit_key: str | None = None) -> Accepted:
    """Accept one order, `caller`'s (the owner: '' with AUTH=off), through the runtime's
    intake (see `Intake.submit`); with a key, a retry by the same caller gets the first
    answer again and creates nothing (keys are per caller). With `limit_key`, it counts
    against the caller's RATE_LIMIT_PER_MINUTE (RateLimited over it); a replay counts too."""
    key = IdempotencyKey.of(caller, idempotency_key, request) if idempotency_key is not None else None
    return runtime.intake.submit(request, key, limit_key, caller)
