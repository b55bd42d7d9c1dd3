"""The worker's steps, each done for a whole batch of orders at once.

The pump (pump.py) hands the executor the orders whose next step is due; the
executor groups them by status and moves each group on with ONE transaction
(`OrderStore.transition_many`) and one call per venue:

  pending/retrying -> routing   start an attempt; quotes for the whole group are
                                fetched off-thread, one `quotes` call per venue
  routing          -> building  on the quotes: decide per order, record it
  building         -> submitted send the swaps, one `execute_many` per venue, each
                                under the client tx id order:attempt; an order
                                resumed in `building` is looked up first, never
                                sent blind
  submitted        -> confirmed/retrying/failed   one `statuses` call per venue;
                                a poll that finds nothing new writes nothing

Between steps an order waits in the pump's timer, held by this worker; no thread
waits for a quote or a confirmation. A new attempt starts only after the venue
said the last one definitely failed (or, for a send it refused, that it never got
it), so an order is never filled twice. Every write is guarded by the order's work
token and seq, so a step of a worker that lost the order changes nothing.

No order waits forever (README, "No order waits forever"). Each case and its bound:
  - a step that raises, or a venue call that fails, for an order: run again after a
    backoff (doubling, capped at STEP_RETRY_MAX_S), at most STEP_MAX_FAILURES times in
    a row; then, if nothing can have been sent in this attempt (pending, routing,
    retrying), the order ends `failed` STEP_FAILED (or the venue's own code);
  - where a transaction may be out (a send that raised, a resumed `building`,
    `submitted`), no new attempt starts until the venue has answered about it: FAILED
    (the attempt failed), or UNKNOWN from a `lookup` made after its validity window
    (from the latest moment it may have been sent; for an order taken over in `building`,
    whose earlier sends this worker cannot know, max(building, created + ORDER_TTL_MS) +
    VENUE_CALL_TIMEOUT_MS, as no send starts past ORDER_TTL_MS) has passed: for a send
    that kept failing, `failed` with the venue's code or STEP_FAILED; for an order past
    ORDER_TTL_MS, or a submitted transaction the venue forgot, `failed` TX_DROPPED.
    Until then a send is repeated only under the same client tx id (idempotent), and
    not at all once STEP_MAX_FAILURES is reached or ORDER_TTL_MS has passed. EXPIRED
    is only for orders of which nothing can have been sent;
  - a venue that cannot answer at all (lookup/status raise or time out, or answer a
    malformed status: `_sane`) about such a transaction is asked again after the backoff
    (at the window's end at the latest), until the validity window has passed AND
    STEP_MAX_FAILURES questions in a row went unanswered: then `failed` VENUE_UNREACHABLE,
    with no new attempt and nothing sent; its message and event data say the outcome is
    unknown and what to reconcile;
  - a venue not loaded here: nothing sent -> the attempt fails VENUE_UNAVAILABLE (a new
    attempt routes afresh); maybe sent -> the order is handed back for a worker that
    has the venue, and after the venue's validity window (when it can no longer land)
    it fails VENUE_UNAVAILABLE, with no new attempt;
  - every venue call runs under VENUE_CALL_TIMEOUT_MS on a few threads of the venue's
    own (calls.py).
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from decimal import Decimal
from typing import Any, Callable, Iterable

from orderengine import metrics
from orderengine.amounts import decimal_str
from orderengine.clock import after_ms, iso, utcnow
from orderengine.config import Settings
from orderengine.calls import VenueCalls
from orderengine.errors import (
    EngineError, ExecutionError, OrderExpired, StepFailed, TxDropped, VenueUnavailable, VenueUnreachable,
    error_from_dict,
)
from orderengine.events import Event
from orderengine.failpoints import failpoint
from orderengine.lifecycle import Status
from orderengine.routing import QuoteFetcher, QuoteOutcome, decide
from orderengine.store import Change, OrderStore, Version, Work
from orderengine.tokens import by_symbol
from orderengine.venue import QuoteRequest, SwapRequest, TxState, TxStatus, Venue
from orderengine.logs import brief

log = logging.getLogger(__name__)

PRICE_PLACES = Decimal("1e-12")
AMOUNT_LIMIT = Decimal("1e22")  # amounts are NUMERIC(40, 18): below this, or not recordable
POLL_MIN_S = 0.1            # confirmation polls: no more often than this
POLL_MAX_S = 2.0
STEP_RETRY_MIN_S = 0.05     # a step that broke runs again after RETRY_BACKOFF_MS (at least this),
STEP_RETRY_MAX_S = 30.0     # doubling each time it breaks again, up to this
BUSY_FACTOR = 4             # groups waiting per step thread before the pump stops claiming
#: statuses in which the order's current attempt may have a transaction out
MAYBE_SENT = frozenset({Status.BUILDING.value, Status.SUBMITTED.value})


def new_worker_id() -> str:
    """host:pid:random, within the 64 characters the tables hold."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(eq=False)
class Held:
    """An order this worker holds, as its last step left it."""
    id: str
    token: str
    status: str
    last_seq: int
    attempts: int
    token_in: str
    token_out: str
    amount_in: Decimal
    slippage_bps: int
    created_at: dt.datetime | None = None
    venue: str | None = None
    tx_hash: str | None = None
    #: when it entered its status: for `submitted`, just after its transaction was sent; for
    #: `building`, just before its first send (the validity window starts from the latest
    #: send: `OrderExecutor._latest_send`). The orders row's updated_at is its last event's
    #: `at`: polls and claims do not touch it
    since: dt.datetime | None = None
    decision: dict[str, Any] | None = None  # the routing decision, while building
    reload: bool = False                    # re-read from the database before the next step
    failures: int = 0                       # steps (or venue calls) in a row that broke on this order
    last_failure: tuple[str, BaseException] | None = None  # (where, what) of the last one
    alone: bool = False                     # run its next step in a group of its own
    #: when this worker last started a send of the current attempt's swap (in memory only;
    #: a worker that took the order over in `building` does not know when the one before
    #: last sent it: `OrderExecutor._latest_send` bounds that)
    sent_at: dt.datetime | None = None
    #: questions to the venue about its transaction (lookup, status) in a row that it did
    #: not answer (raised, timed out): with the validity window, what VENUE_UNREACHABLE bounds
    lookup_failures: int = 0

    @classmethod
    def of(cls, row: Any) -> "Held":
        return cls(row.id, row.work_token, row.status, row.last_seq, row.attempts, row.token_in,
                   row.token_out, row.amount_in, row.slippage_bps, row.created_at, row.venue, row.tx_hash,
                   row.updated_at)

    @property
    def version(self) -> Version:
        return Version(self.status, self.last_seq, self.attempts)

    @property
    def client_tx_id(self) -> str:
        """The client transaction id of its current attempt (what `lookup` is asked for)."""
        return f"{self.id}:{self.attempts}"

    def moved(self, event: Event) -> None:
        self.status, self.last_seq, self.attempts = event.status.value, event.seq, event.attempt
        self.since = event.at
        if self.status != Status.SUBMITTED.value:  # a new status before any send of it
            self.sent_at = None
        self.answered()

    def answered(self) -> None:
        """It made progress (moved on, or the venue answered about it): failures start over."""
        self.failures, self.last_failure, self.alone, self.lookup_failures = 0, None, False, 0

    def keep(self, old: "Held") -> None:
        """Re-read from the database: what the executor learnt about the order stays with it."""
        self.failures, self.last_failure, self.alone = old.failures, old.last_failure, old.alone
        self.lookup_failures = old.lookup_failures
        if old.attempts == self.attempts:
            self.sent_at = old.sent_at

    @property
    def maybe_sent_at(self) -> dt.datetime | None:
        """The latest send of its transaction this worker knows of (`building`: recorded
        before the send; `submitted`: just after it; and its own last send). For an order
        taken over in `building` a worker before may have sent it later:
        `OrderExecutor._latest_send` is where the validity window starts."""
        moments = [m for m in (self.since, self.sent_at) if m is not None]
        return max(moments) if moments else None


#: later(orders, seconds): run these orders' next step after `seconds` (the pump's timer)
Later = Callable[[list[Held], float], None]


class OrderExecutor:
    def __init__(self, settings: Settings, store: OrderStore, venues: dict[str, Venue],
                 fetcher: QuoteFetcher, throttle, later: Later, worker_id: str) -> None:
        self.settings = settings
        self.store = store
        self.venues = venues
        self.fetcher = fetcher
        self.throttle = throttle
        self.later = later
        self.worker_id = worker_id
        self._pool = ThreadPoolExecutor(max_workers=settings.worker_concurrency, thread_name_prefix="step")
        # execute/status/lookup (and batches) of each venue: as many threads as steps, so a
        # healthy venue never refuses a call, and a hung one holds no more than that
        self._calls = {name: VenueCalls(name, settings.worker_concurrency,
                                        settings.venue_call_timeout_ms / 1000) for name in venues}
        self._queued = 0  # groups handed to the step threads and not yet done
        self._count_lock = threading.Lock()
        # orders in a step (queued or running) or waiting for their quotes, by id: what
        # the pump's self-audit counts as known besides its timer (pump.py)
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._steps: dict[str, Callable[[list[Held]], None]] = {
            Status.PENDING.value: self._start_attempts,
            Status.RETRYING.value: self._start_attempts,
            Status.ROUTING.value: self._fetch_quotes,  # resumed: its quotes were lost with a worker
            Status.BUILDING.value: self._resume_send,
            Status.SUBMITTED.value: self._settle,
        }

    # --- entry points ---------------------------------------------------------------

    def submit(self, batch: Iterable[Held]) -> None:
        """Run the due step of every order in `batch` on the step threads, one task per status."""
        # each order's status read once: a step elsewhere may be moving the same order on
        # (its writes and ours are guarded by seq, so one of them finds it moved and stops)
        groups: dict[Any, list[Held]] = {}
        for held in batch:
            step = self._step_for(held)
            if step is None:  # it ended meanwhile
                continue
            if held.alone:
                self._spawn(step, [held])
            else:
                groups.setdefault(step, []).append(held)
        for step, group in groups.items():
            self._spawn(step, group)

    def run(self, batch: Iterable[Held]) -> None:
        """The same as `submit`, on the calling thread (tests, and the step threads)."""
        for step, group in _by(batch, self._step_for).items():
            if step is not None:
                self._guarded(step, group)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
        for calls in self._calls.values():
            calls.close()

    def _step_for(self, held: Held) -> Callable[[list[Held]], None] | None:
        """The order's next step: the one for its status, or giving it up when its steps
        broke STEP_MAX_FAILURES times in a row and nothing can have been sent."""
        if held.failures >= self.settings.step_max_failures and held.status not in MAYBE_SENT \
                and held.status in self._steps:
            return self._give_up
        return self._steps.get(held.status)

    def _guarded(self, step: Callable[..., None], group: list[Held], *args: Any) -> None:
        # Every step can be run again (writes are guarded by token and seq, sends by the
        # client tx id), so a step that broke - the database went away - is, from what the
        # database says then. Its orders run again each in a group of its own, so an order
        # that breaks every time (a plugin's bad answer) holds up no other, with a backoff
        # that doubles up to STEP_RETRY_MAX_S. After STEP_MAX_FAILURES breaks in a row an
        # order with nothing sent is given up (`_step_for`); one that may have a transaction
        # out keeps being run (each run asks the venue) until the venue answers about it.
        try:
            step(group, *args)
        except Exception as exc:
            log.exception("step failed; it runs again after a backoff",
                          extra={"step": step.__name__, "order_ids": [h.id for h in group][:20],
                                 "orders": len(group)})
            for held in group:
                held.reload, held.alone = True, len(group) > 1 or held.alone
                self._broke([held], exc, step.__name__)

    def _broke(self, orders: list[Held], exc: BaseException, where: str,
               until: dt.datetime | None = None) -> None:
        """A step or venue call broke for these orders: count it and run them again after
        a backoff (RETRY_BACKOFF_MS doubling per failure in a row, capped), and no later
        than `until` if that is still ahead."""
        now = utcnow()
        for held in orders:
            held.failures += 1
            held.last_failure = (where, exc)
            delay = self._backoff(held.failures)
            if until is not None and until > now:
                delay = min(delay, max(POLL_MIN_S, (until - now).total_seconds()))
            self.later([held], delay)

    def _backoff(self, failures: int) -> float:
        base = max(STEP_RETRY_MIN_S, self.settings.retry_backoff_ms / 1000)
        return min(STEP_RETRY_MAX_S, base * 2 ** (max(1, failures) - 1))

    def _exhausted(self, held: Held) -> bool:
        return held.failures >= self.settings.step_max_failures

    def _gave_up_error(self, held: Held) -> ExecutionError:
        """What ends an order whose steps kept breaking: the venue's own error when the last
        failure was one (VENUE_TIMEOUT, VENUE_UNAVAILABLE, ...), else STEP_FAILED naming the
        step and the exception's type. Never retried: a new attempt would break the same way."""
        where, exc = held.last_failure or ("step", RuntimeError("unknown"))
        tail = f"gave up after {held.failures} failures in a row of step {where}"
        if isinstance(exc, ExecutionError):
            error = error_from_dict({"code": exc.code, "message": f"{exc.message} ({tail})"})
        elif isinstance(exc, EngineError):
            error = StepFailed(f"{exc.code}: {exc.message} ({tail})")
        else:
            error = StepFailed(f"{tail}: {type(exc).__name__}: {brief(exc, 300)}")
        error.retryable = False
        return error

    def _give_up(self, group: list[Held]) -> None:
        """Orders with nothing sent whose steps broke STEP_MAX_FAILURES times: `failed`."""
        self._attempts_failed([(h, self._gave_up_error(h)) for h in group])

    def _call(self, venue: Venue, method: Callable[..., Any], *args: Any) -> Any:
        """A venue call under VENUE_CALL_TIMEOUT_MS, on the venue's own threads."""
        calls = self._calls.get(venue.name)
        if calls is None:  # a venue this executor was not built with (tests): same limits
            calls = self._calls.setdefault(venue.name, VenueCalls(
                venue.name, self.settings.worker_concurrency, self.settings.venue_call_timeout_ms / 1000))
        return calls.call(method, *args)

    def _spawn(self, step: Callable[..., None], group: list[Held], *args: Any) -> None:
        """Run a step for `group` on a step thread."""
        with self._count_lock:
            self._queued += 1
            self._in_flight.update(h.id for h in group)
        try:
            self._pool.submit(self._task, step, group, *args)
        except BaseException:
            with self._count_lock:
                self._queued -= 1
                self._in_flight.subtract(h.id for h in group)
                self._drop_done()
            raise

    def _task(self, step: Callable[..., None], group: list[Held], *args: Any) -> None:
        try:
            self._guarded(step, group, *args)
        finally:
            # after the step: whatever it put back on the pump's timer is there already,
            # so an order is never out of sight of the self-audit while this worker runs it
            with self._count_lock:
                self._queued -= 1
                self._in_flight.subtract(h.id for h in group)
                self._drop_done()

    def _drop_done(self) -> None:
        for order_id in [i for i, n in self._in_flight.items() if n <= 0]:
            del self._in_flight[order_id]

    def _hold(self, group: list[Held]) -> None:
        """These orders are waiting for something other than a step thread (their quotes)."""
        with self._count_lock:
            self._in_flight.update(h.id for h in group)

    def _let_go(self, group: list[Held]) -> None:
        with self._count_lock:
            self._in_flight.subtract(h.id for h in group)
            self._drop_done()

    def in_flight(self) -> set[str]:
        """Ids of the orders a step is queued or running for, or whose quotes are on their way."""
        with self._count_lock:
            return set(self._in_flight)

    @property
    def busy(self) -> bool:
        """Enough groups wait for a step thread: the pump takes no more orders for now, so
        a burst is shared with the other workers instead of expiring in this one's queue."""
        return self._queued >= self.settings.worker_concurrency * BUSY_FACTOR

    @property
    def venue_names(self) -> list[str]:
        return sorted(self.venues)

    @property
    def send_grace_s(self) -> tuple[float, float]:
        """(ORDER_TTL_MS, VENUE_CALL_TIMEOUT_MS) in seconds: how `_latest_send` bounds the
        send of an order taken over in `building` (the claim filter uses the same bound)."""
        return self.settings.order_ttl_ms / 1000, self.settings.venue_call_timeout_ms / 1000

    @property
    def unloaded_window_s(self) -> float:
        """The validity window assumed for a venue not loaded here (its own cannot be read):
        the longest of the contract's default and every loaded venue's."""
        return max([Venue.validity_window_s, *(_window(v) for v in self.venues.values())])

    # --- steps ------------------------------------------------------------------

    def expire_overdue(self, limit: int = 500) -> int:
        """End `failed` with EXPIRED every order not yet handed to a venue whose
        ORDER_TTL_MS has passed, whoever holds it (safe: its holder's next write finds
        it moved on, and a swap is sent only after `building` is recorded). Orders in
        `building` are left to their holder, which asks the venue first."""
        rows = self.store.overdue(after_ms(-self.settings.order_ttl_ms), limit)
        if not rows:
            return 0
        self._expire([Held.of(r) for r in rows])
        return len(rows)

    def _expired(self, group: list[Held], now: dt.datetime | None = None) -> tuple[list[Held], list[Held]]:
        """(still in time, past ORDER_TTL_MS) at `now`."""
        deadline = after_ms(-self.settings.order_ttl_ms, now)
        live, expired = [], []
        for held in group:
            (expired if held.created_at is not None and held.created_at <= deadline else live).append(held)
        return live, expired

    def _expiry(self) -> OrderExpired:
        return OrderExpired(f"The order was not submitted within {self.settings.order_ttl_ms} ms "
                            "of being accepted; it was never sent.")

    def _expire(self, expired: list[Held]) -> None:
        self._attempts_failed([(h, self._expiry()) for h in expired])

    @metrics.step("start_attempts")
    def _start_attempts(self, group: list[Held]) -> None:
        failpoint("start_attempt")  # crash matrix: claimed, still pending (or retrying)
        group, expired = self._expired(group)
        self._expire(expired)
        ready, throttled = [], []
        for held in group:
            delay = self.throttle.acquire() if held.status == Status.PENDING.value else 0.0
            (throttled if delay > 0 else ready).append((held, delay))
        if throttled:
            self.store.set_work_many([(h.id, h.token, Work(h.token, self.worker_id, after_ms(d * 1000)))
                                      for h, d in throttled])
            for held, delay in throttled:
                log.info("order throttled", extra={"order_id": held.id, "wait_ms": int(delay * 1000)})
                self.later([held], delay)
        venues = sorted(self.venues)
        started = self._move([Change(h.id, h.token, h.version, Status.ROUTING, {"venues": venues},
                                     attempt=h.attempts + 1, changes={"attempts": h.attempts + 1},
                                     work=Work(h.token, self.worker_id, utcnow()))
                              for h, _ in ready], [h for h, _ in ready])
        failpoint("routing")  # crash matrix: `routing` recorded, quotes not asked yet
        if started:
            self._fetch_quotes(started)

    @metrics.step("fetch_quotes")
    def _fetch_quotes(self, group: list[Held]) -> None:
        requests = [QuoteRequest(by_symbol(h.token_in), by_symbol(h.token_out), h.amount_in) for h in group]

        def decide_on(outcomes: list[list[QuoteOutcome]]) -> None:
            try:
                self._spawn(self._route, group, outcomes)
            except Exception as exc:  # no step thread takes it (shutting down): never stuck in routing
                log.warning("quotes arrived but no step thread took them", extra={"error": str(exc)})
                for held in group:
                    held.reload = True
                self._broke(group, exc, "_route")
            finally:
                self._let_go(group)  # in a step, or on the timer, by now
        self._hold(group)
        try:
            self.fetcher.fetch_many(requests, decide_on)
        except BaseException:
            self._let_go(group)
            raise

    @metrics.step("route")
    def _route(self, group: list[Held], outcomes: list[list[QuoteOutcome]]) -> None:
        failed: list[tuple[Held, ExecutionError]] = []
        changes, deciding = [], []
        live, expired = self._expired(group)
        self._expire(expired)
        in_time = {id(h) for h in live}
        for held, quotes in zip(group, outcomes):
            if id(held) not in in_time:
                continue
            try:
                decision = decide(quotes, by_symbol(held.token_in), by_symbol(held.token_out),
                                  held.amount_in, held.slippage_bps)
            except ExecutionError as exc:
                log.info("no route", extra={"order_id": held.id, "attempt": held.attempts,
                                            "quotes": [q.to_dict() for q in quotes], "error": exc.to_dict()})
                failed.append((held, exc))
                continue
            held.decision = dict(decision, clientTxId=f"{held.id}:{held.attempts}")
            log.info("routing decision", extra={
                "order_id": held.id, "attempt": held.attempts, "venue": decision["venue"],
                "expected_out": decision["expectedOut"], "min_amount_out": decision["minAmountOut"],
                "quotes": decision["quotes"]})
            changes.append(Change(held.id, held.token, held.version, Status.BUILDING, held.decision,
                                  changes={"venue": decision["venue"]}))
            deciding.append(held)
        self._attempts_failed(failed)
        building = self._move(changes, deciding)
        if building:
            self._send(building, known_unsent=True)

    def _resume_send(self, group: list[Held]) -> None:
        """Orders stopped in `building`: the swap may or may not have gone out."""
        missing = [h.id for h in group if h.decision is None]
        decisions = self.store.last_events(missing, Status.BUILDING) if missing else {}
        for held in group:
            if held.decision is None:
                held.decision = decisions[held.id].data
        self._send(group, known_unsent=False)

    @metrics.step("send")
    def _send(self, group: list[Held], known_unsent: bool) -> None:
        """Send the swaps of orders in `building` (`known_unsent`: just built by this worker,
        so none of them can be out yet; otherwise each is looked up first). A send whose
        outcome is unknown (it raised, it timed out) counts as a failure of the order and
        is looked up after the backoff; it is sent again only if the venue says it never
        got it, and after STEP_MAX_FAILURES such rounds the order fails instead (`_send_to`)."""
        submitted: list[tuple[Held, str]] = []
        unknown: list[tuple[Held, BaseException]] = []
        failed: list[tuple[Held, ExecutionError]] = []
        for name, orders in _by(group, lambda h: h.decision["venue"]).items():
            venue = self.venues.get(name)
            if venue is None:
                self._venue_missing(orders, name, maybe_sent=not known_unsent)
                continue
            for chunk in _chunks(orders, venue.max_batch):
                self._send_to(venue, chunk, known_unsent, submitted, unknown, failed)
        if unknown:
            log.warning("send outcome unknown; will ask the venue",
                        extra={"order_ids": [h.id for h, _ in unknown][:20], "orders": len(unknown)})
            for held, exc in unknown:
                self._broke([held], exc, "_send")
        self._attempts_failed(failed)
        first_poll: dict[str, float] = {}
        changes = []
        for held, signature in submitted:
            venue = self.venues[held.decision["venue"]]
            first_poll[held.id] = venue.confirmation_hint_ms / 1000 * 0.8
            changes.append(Change(held.id, held.token, held.version, Status.SUBMITTED,
                                  {"venue": venue.name, "txHash": signature},
                                  changes={"tx_hash": signature, "venue": venue.name},
                                  work=Work(held.token, self.worker_id, after_ms(first_poll[held.id] * 1000))))
            held.tx_hash, held.venue = signature, venue.name
        for held in self._move(changes, [h for h, _ in submitted]):
            failpoint("submitted")  # crash matrix: `submitted` recorded, not yet polled
            held.decision = None
            self.later([held], first_poll[held.id])

    def _send_to(self, venue: Venue, orders: list[Held], known_unsent: bool,
                 submitted: list, unknown: list, failed: list) -> None:
        """Send `orders` to `venue` (those it does not have yet), sorting each into
        submitted (with its signature), unknown (with what broke: ask again later) or
        failed. An order whose earlier sends broke STEP_MAX_FAILURES times in a row is
        not sent again: once the venue says it never got it, it fails (`_gave_up_error`)."""
        to_send, expired = self._expired(orders)
        late = {id(h) for h in expired}
        if not known_unsent:
            asked_at = utcnow()
            answers = self._lookups(venue, orders, failed)
            if answers is None:
                return
            to_send = []
            for held, status in answers:
                if status.state is not TxState.UNKNOWN:
                    submitted.append((held, status.signature))  # it went out before: it was in time
                elif self._exhausted(held):  # never got it, after all those tries: stop sending
                    self._stop_sending(venue, held, asked_at, self._gave_up_error, failed)
                elif id(held) in late:  # past ORDER_TTL_MS, and an earlier send may still land
                    self._stop_sending(venue, held, asked_at, partial(self._dropped_after_expiry, venue),
                                       failed)
                else:
                    to_send.append(held)
        else:  # just built here: nothing of these can be out, so expiry ends them at once
            failed.extend((h, self._expiry()) for h in expired)
        if not to_send:
            return
        # No send starts past ORDER_TTL_MS, whatever the lookup above took: what bounds the
        # window of an order taken over in `building` (`_latest_send`)
        sending_at = utcnow()
        to_send, too_late = self._expired(to_send, sending_at)
        for held in too_late:
            if known_unsent:  # never sent
                failed.append((held, self._expiry()))
            else:  # the venue never got it, but an earlier send may still land
                self._stop_sending(venue, held, asked_at, partial(self._dropped_after_expiry, venue), failed)
        if not to_send:
            return
        for held in to_send:  # from here it may be out: its validity window starts again
            held.sent_at = sending_at
        swaps = [(SwapRequest(h.decision["pool"], by_symbol(h.token_in), by_symbol(h.token_out), h.amount_in,
                              Decimal(h.decision["minAmountOut"])), h.decision["clientTxId"]) for h in to_send]
        failpoint("before_send")  # crash matrix: `building` recorded, nothing sent
        try:
            results = _one_each(self._call(venue, venue.execute_many, swaps), swaps, venue, "execute_many")
            failpoint("after_send")  # crash matrix: the venue has them, `submitted` not written
        except Exception as exc:
            log.warning("send failed as a whole", extra={"venue": venue.name, "error": str(exc)})
            unknown.extend((h, exc) for h in to_send)
            return
        refused: list[tuple[Held, ExecutionError]] = []
        for held, result in zip(to_send, results):
            if isinstance(result, str):
                submitted.append((held, result))
            elif isinstance(result, ExecutionError) and not isinstance(result, VenueUnavailable):
                refused.append((held, result))
            else:
                unknown.append((held, result if isinstance(result, BaseException)
                                else TypeError(f"execute answered {type(result).__name__}")))
        if refused:
            # The venue refused: if it also says it never received the transaction, the
            # attempt failed; if it has it after all, go on with it.
            errors = {id(h): e for h, e in refused}
            for held, status in self._lookups(venue, [h for h, _ in refused], failed) or []:
                if status.state is TxState.UNKNOWN:
                    failed.append((held, errors[id(held)]))
                else:
                    submitted.append((held, status.signature))

    def _stop_sending(self, venue: Venue, held: Held, asked_at: dt.datetime,
                      error: Callable[[Held], ExecutionError], failed: list) -> None:
        """An order in `building` that is not to be sent again (its sends broke
        STEP_MAX_FAILURES times, or its ORDER_TTL_MS has passed), which the venue says it
        never got, though an earlier send may still be on its way: it could land until
        the venue's validity window (from that send) has passed. It fails with `error`
        only once a lookup made after the window's end still says UNKNOWN (this one, or
        the one at the window's end); if it lands meanwhile, it goes on as submitted."""
        end = self._window_end(venue, held)
        if asked_at >= end:
            failed.append((held, error(held)))
            return
        log.warning("not sending again; asking the venue until the validity window of an earlier send ends",
                    extra={"order_id": held.id, "venue": venue.name})
        self.later([held], max(POLL_MIN_S, min(POLL_MAX_S, (end - utcnow()).total_seconds())))

    def _dropped_after_expiry(self, venue: Venue, held: Held) -> ExecutionError:
        """What ends an order past ORDER_TTL_MS whose send may have gone out and that the
        venue still does not know after the validity window: TX_DROPPED, not EXPIRED (a
        transaction of it may have been out; it can no longer land)."""
        cause = ""
        if held.last_failure is not None:
            where, exc = held.last_failure
            cause = f" (the last failure, in step {where}: {type(exc).__name__}: {brief(exc, 200)})"
        return TxDropped(
            f"The order was not submitted within {self.settings.order_ttl_ms} ms of being accepted, "
            f"while a send of its swap may have been out{cause}; {venue.name} does not know transaction "
            f"{held.decision['clientTxId']} {_window(venue):g} s after it may have been sent (its validity "
            "window): it can no longer land. Not sent again.")

    def _window_end(self, venue: Venue, held: Held) -> dt.datetime:
        """When the order's transaction can no longer land: the venue's validity window from
        the latest moment it may have been sent."""
        return (self._latest_send(held) or utcnow()) + dt.timedelta(seconds=_window(venue))

    def _latest_send(self, held: Held) -> dt.datetime | None:
        """The latest moment the order's transaction may have been sent. `submitted` is
        recorded after its send answered, and this worker knows its own sends (`sent_at`).
        But an order in `building` that this worker has not sent may have been sent by the
        worker that held it before (that died, or lost it), and sent again under the same
        client tx id until ORDER_TTL_MS (no send starts later: `_send_to`), each send
        lasting up to VENUE_CALL_TIMEOUT_MS; when is not recorded (`sent_at` is in memory
        only), so the bound is taken: max(since, created_at + ORDER_TTL_MS) plus
        VENUE_CALL_TIMEOUT_MS."""
        if held.status != Status.BUILDING.value or held.sent_at is not None:
            return held.maybe_sent_at
        moments = [held.since] if held.since is not None else []
        if held.created_at is not None:
            moments.append(held.created_at + dt.timedelta(milliseconds=self.settings.order_ttl_ms))
        if not moments:
            return None
        return max(moments) + dt.timedelta(milliseconds=self.settings.venue_call_timeout_ms)

    def _lookups(self, venue: Venue, orders: list[Held], failed: list) -> list[tuple[Held, TxStatus]] | None:
        """`lookup` of each order's transaction by client tx id: (order, status) for each
        answered; None if the venue did not answer (`_unanswered` then asks again later, or
        ends the orders). An order whose answer is malformed is left out (`_sane`)."""
        try:
            statuses = _one_each(self._call(venue, venue.lookups, [h.decision["clientTxId"] for h in orders]),
                                 orders, venue, "lookups")
        except Exception as exc:
            log.warning("lookup failed; will ask again", extra={"venue": venue.name, "error": str(exc)})
            self._unanswered(venue, orders, exc, "_send", failed)
            return None
        answers = self._sane(venue, "lookups", orders, statuses, "_send", failed, signed=True)
        for held, _ in answers:
            held.lookup_failures = 0
        return answers

    def _sane(self, venue: Venue, method: str, orders: list[Held], statuses: list, where: str,
              failed: list, signed: bool = False) -> list[tuple[Held, TxStatus]]:
        """The (order, status) pairs of a batch answer that can be used. An answer that
        cannot (not a TxStatus, a state that is no TxState, CONFIRMED without finite positive
        Decimal amounts, ...: `_malformed`) counts as the venue not answering about that
        transaction (`_unanswered`): asked again after the backoff and, once the validity
        window has passed and STEP_MAX_FAILURES questions in a row got no usable answer,
        `failed` VENUE_UNREACHABLE, its message naming the malformed statuses. Never acted on
        (a confirmation on a guess, or a step that raises on it for ever)."""
        answers = []
        for held, status in zip(orders, statuses):
            problem = _malformed(status, signed)
            if problem is None:
                answers.append((held, status))
                continue
            log.warning("malformed status from a venue; counted as no answer, will ask again",
                        extra={"order_id": held.id, "venue": venue.name, "method": method,
                               "problem": problem})
            error = MalformedStatus(f"{venue.name}.{method}: {problem}")
            self._unanswered(venue, [held], error, where, failed)
        return answers

    def _unanswered(self, venue: Venue, orders: list[Held], exc: BaseException, where: str,
                    failed: list) -> None:
        """The venue did not answer (raised, timed out) a question about these orders'
        transactions, which may be out. Ask again after the backoff, at the end of the
        validity window at the latest; once the window (from the latest possible send) has
        passed and STEP_MAX_FAILURES questions in a row went unanswered, `failed`
        VENUE_UNREACHABLE: the outcome is unknown, and nothing is sent again."""
        now = utcnow()
        for held in orders:
            held.lookup_failures += 1
            end = self._window_end(venue, held)
            if held.lookup_failures >= self.settings.step_max_failures and now >= end:
                failed.append((held, self._unreachable(venue, held, exc)))
            else:
                self._broke([held], exc, where, until=end)

    def _unreachable(self, venue: Venue, held: Held, exc: BaseException) -> VenueUnreachable:
        client_tx_id = (held.decision or {}).get("clientTxId") or held.client_tx_id
        sent_at = iso(held.maybe_sent_at)
        tx = f"transaction {held.tx_hash} (client tx id {client_tx_id})" if held.tx_hash \
            else f"the transaction with client tx id {client_tx_id}"
        log.error("venue unreachable about a transaction that may be out, past its validity window; "
                  "the order ends failed with its outcome unknown",
                  extra={"order_id": held.id, "venue": venue.name, "tx_hash": held.tx_hash,
                         "client_tx_id": client_tx_id, "sent_at": sent_at})
        if isinstance(exc, MalformedStatus):
            what = (f"gave no usable answer to {held.lookup_failures} questions in a row about {tx}: "
                    f"it answered malformed statuses (the last: {brief(exc, 200)}). The transaction was "
                    f"sent around {sent_at}, and its validity window ({_window(venue):g} s) has passed")
        else:
            what = (f"did not answer {held.lookup_failures} questions in a row about {tx}, sent around "
                    f"{sent_at}, and its validity window ({_window(venue):g} s) has passed (the last: "
                    f"{type(exc).__name__}: {brief(exc, 200)})")
        return VenueUnreachable(
            f"Outcome unknown: {venue.name} {what}. The swap may have filled: "
            "reconcile with the venue. Not sent again.",
            venue=venue.name, tx_hash=held.tx_hash, client_tx_id=client_tx_id, sent_at=sent_at)

    @metrics.step("settle")
    def _settle(self, group: list[Held]) -> None:
        """Ask the venue where each submitted transaction stands (one `statuses` call per
        venue). A venue that cannot answer is asked again after a backoff, until the
        transaction's validity window has passed and STEP_MAX_FAILURES questions in a row
        went unanswered: then `failed` VENUE_UNREACHABLE, outcome unknown (`_unanswered`).
        One it calls UNKNOWN is asked about again until its validity window has passed;
        then a last `lookup` decides: still UNKNOWN -> `failed` TX_DROPPED, never sent again."""
        confirmed: list[tuple[Held, TxStatus]] = []
        failed: list[tuple[Held, ExecutionError]] = []
        for name, orders in _by(group, lambda h: h.venue).items():
            venue = self.venues.get(name)
            if venue is None:
                self._venue_missing(orders, name, maybe_sent=True)
                continue
            pending: list[Held] = []
            lost: list[Held] = []
            for chunk in _chunks(orders, venue.max_batch):
                try:
                    statuses = _one_each(self._call(venue, venue.statuses, [h.tx_hash for h in chunk]),
                                         chunk, venue, "statuses")
                except Exception as exc:
                    log.warning("status query failed; will ask again", extra={"venue": name, "error": str(exc)})
                    self._unanswered(venue, chunk, exc, "_settle", failed)
                    continue
                for held, status in self._sane(venue, "statuses", chunk, statuses, "_settle", failed):
                    if status.state is TxState.UNKNOWN:
                        # not an answer that ends the wait: the last `lookup` (`_lost`) must
                        # come, so a venue that cannot answer that one is still bounded
                        lost.append(held)
                    elif not _ended(held, status, confirmed, failed):
                        held.answered()
                        pending.append(held)
            if pending:  # still pending: ask again (nothing written)
                self.later(pending, _poll_interval(venue))
            if lost:
                self._lost(venue, lost, confirmed, failed)
        self._confirm(confirmed)
        self._attempts_failed(failed)

    def _lost(self, venue: Venue, lost: list[Held], confirmed: list, failed: list) -> None:
        """Submitted transactions the venue says it does not know. Before their validity
        window has passed they may still land: ask again (at the window's end at the
        latest). After it, a last `lookup` by client tx id: UNKNOWN still -> TX_DROPPED."""
        window = _window(venue)
        now = utcnow()
        overdue = []
        for held in lost:
            left = (self._window_end(venue, held) - now).total_seconds()
            if left <= 0:
                overdue.append(held)
                continue
            log.warning("venue does not know a submitted transaction; asking again until its "
                        "validity window ends", extra={"order_id": held.id, "venue": venue.name})
            self.later([held], max(POLL_MIN_S, min(POLL_MAX_S, left)))
        if not overdue:
            return
        try:
            last = _one_each(self._call(venue, venue.lookups, [h.client_tx_id for h in overdue]),
                             overdue, venue, "lookups")
        except Exception as exc:
            log.warning("last lookup failed; will ask again", extra={"venue": venue.name, "error": str(exc)})
            self._unanswered(venue, overdue, exc, "_settle", failed)
            return
        for held, status in self._sane(venue, "lookups", overdue, last, "_settle", failed):
            if _ended(held, status, confirmed, failed):
                continue
            if status.state is TxState.PENDING:
                held.answered()
                self.later([held], _poll_interval(venue))
            else:
                failed.append((held, TxDropped(
                    f"{venue.name} does not know transaction {held.tx_hash} {window:g} s after it was "
                    "submitted (its validity window): it can no longer land. Not sent again.")))

    @metrics.step("confirm")
    def _confirm(self, confirmed: list[tuple[Held, TxStatus]]) -> None:
        changes, changes_out = [], {}
        for held, status in confirmed:
            changes_out[held.id] = decimal_str(status.amount_out)
            price = (status.amount_out / status.amount_in).quantize(PRICE_PLACES)
            changes.append(Change(held.id, held.token, held.version, Status.CONFIRMED, {
                "venue": held.venue, "txHash": held.tx_hash, "amountOut": decimal_str(status.amount_out),
                "executedPrice": decimal_str(price), "fee": decimal_str(status.fee)},
                changes={"amount_out": status.amount_out, "executed_price": price, "error": None}))
        for held in self._move(changes, [h for h, _ in confirmed]):
            log.info("order confirmed", extra={"order_id": held.id, "venue": held.venue,
                                               "amount_out": changes_out[held.id]})

    def _attempts_failed(self, failed: list[tuple[Held, ExecutionError]]) -> None:
        if not failed:
            return
        changes, delays = [], {}
        for held, error in failed:
            body = {"code": error.code, "message": error.message}
            attempt = held.attempts
            if error.retryable and attempt < self.settings.max_attempts:
                delays[held.id] = delay_ms = self.settings.retry_backoff_ms * 2 ** (attempt - 1)
                changes.append(Change(held.id, held.token, held.version, Status.RETRYING,
                                      {"attempt": attempt, "error": body, "retryInMs": delay_ms},
                                      changes={"error": body},
                                      work=Work(held.token, self.worker_id, after_ms(delay_ms))))
                log.info("attempt failed; retrying", extra={"order_id": held.id, "attempt": attempt,
                                                            "error": body, "retry_in_ms": delay_ms})
            else:
                data = {"error": body, "attempts": attempt, **getattr(error, "event_data", {})}
                changes.append(Change(held.id, held.token, held.version, Status.FAILED,
                                      data, changes={"error": body}))
                log.info("order failed", extra={"order_id": held.id, "attempts": attempt, "error": body})
        for held in self._move(changes, [h for h, _ in failed]):
            if held.id in delays:
                failpoint("retrying")  # crash matrix: `retrying` recorded, in its backoff
                held.decision = None
                self.later([held], delays[held.id] / 1000)

    # --- helpers ----------------------------------------------------------------

    def _move(self, changes: list[Change], group: list[Held]) -> list[Held]:
        """Apply the changes (one per order of `group`, in order); the orders that
        moved, updated. Those that had moved on without us are dropped: not ours."""
        if not changes:
            return []
        events, stale = self.store.transition_many(changes)
        if stale:
            log.info("orders moved on without this step; step abandoned",
                     extra={"order_ids": [c.order_id for c in stale][:20], "orders": len(stale)})
        by_id = {e.order_id: e for e in events}
        moved = []
        for held in group:
            event = by_id.get(held.id)
            if event is not None:
                metrics.order_moved(held.created_at, event)
                held.moved(event)
                moved.append(held)
        return moved

    def _venue_missing(self, orders: list[Held], name: str, maybe_sent: bool) -> None:
        """The order's venue is not loaded in this worker. Nothing sent in this attempt:
        the attempt fails VENUE_UNAVAILABLE (the next one routes afresh, among the venues
        loaded). Maybe sent: only that venue can say what became of it, so the order is
        handed back for a worker that has the venue (claiming skips such orders in
        workers without it, `OrderStore.claim_due`); once its validity window has passed
        the transaction can no longer land, and the order fails VENUE_UNAVAILABLE with
        no new attempt (a new one could fill twice if the first landed in time)."""
        if not maybe_sent:
            self._attempts_failed([(h, VenueUnavailable(f"The venue {name} is not loaded in this worker."))
                                   for h in orders])
            return
        window = self.unloaded_window_s
        now = utcnow()
        overdue = [h for h in orders if (sent := self._latest_send(h)) is not None
                   and now >= sent + dt.timedelta(seconds=window)]
        if overdue:
            log.error("the venue of an order in flight is not loaded, past its validity window; failing it",
                      extra={"venue": name, "order_ids": [h.id for h in overdue][:20]})
            ended = []
            for held in overdue:
                error = VenueUnavailable(
                    f"The venue {name} was not loaded in any worker that took the order within "
                    f"{window:g} s of its send; its transaction can no longer land, and whether it "
                    "landed before is unknown. Not sent again.")
                error.retryable = False
                ended.append((held, error))
            self._attempts_failed(ended)
        rest = [h for h in orders if h not in overdue]
        if rest:
            log.error("the venue of an order in flight is not loaded here; handing it to a worker that has it",
                      extra={"venue": name, "order_ids": [h.id for h in rest][:20]})
            self.store.set_work_many([(h.id, h.token, Work(h.token, None, now)) for h in rest])


def _by(group: Iterable[Held], key: Callable[[Held], Any]) -> dict[Any, list[Held]]:
    out: dict[Any, list[Held]] = {}
    for held in group:
        out.setdefault(key(held), []).append(held)
    return out


def _chunks(items: list[Held], size: int) -> Iterable[list[Held]]:
    size = max(1, size)
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _one_each(answers: list, asked: list, venue: Venue, method: str) -> list:
    """A batch call's answers, if there is one per item asked; a plugin that answers more
    or fewer fails the call (its items are asked again), rather than dropping orders."""
    if len(answers) != len(asked):
        raise ValueError(f"{venue.name}.{method} answered {len(answers)} items for {len(asked)}")
    return answers


class MalformedStatus(ValueError):
    """A venue answered about a transaction with a status that cannot be used."""


def _malformed(status: Any, signed: bool = False) -> str | None:
    """Why a venue's status of a transaction cannot be used, or None when it can. `signed`:
    the answer's signature is used (a lookup before a send), so one that says the venue has
    the transaction must carry it."""
    if not isinstance(status, TxStatus):
        return f"answered {type(status).__name__}, not a TxStatus"
    if not isinstance(status.state, TxState):
        return f"state {status.state!r} is not a TxState"
    if signed and status.state is not TxState.UNKNOWN and not (isinstance(status.signature, str)
                                                                and status.signature):
        return f"{status.state.value} without a signature: {status.signature!r}"
    if status.state is TxState.CONFIRMED:
        for name in ("amount_in", "amount_out", "fee"):
            value = getattr(status, name)
            if not (isinstance(value, Decimal) and value.is_finite() and abs(value) < AMOUNT_LIMIT
                    and (value > 0 or (name == "fee" and value == 0))):
                need = "a finite Decimal >= 0" if name == "fee" else "a finite positive Decimal"
                return f"confirmed with {name}={value!r} ({need} below {AMOUNT_LIMIT:E} is needed)"
        try:
            price = (status.amount_out / status.amount_in).quantize(PRICE_PLACES)
        except ArithmeticError:
            price = None
        if price is None or price >= AMOUNT_LIMIT:
            return ("confirmed with amounts whose price cannot be recorded: "
                    f"{status.amount_out!r} / {status.amount_in!r}")
    elif status.state is TxState.FAILED:
        for name in ("error_code", "error_message"):
            value = getattr(status, name)
            if value is not None and not isinstance(value, str):
                return f"failed with {name}={value!r} (a string or None is needed)"
    return None


def _ended(held: Held, status: TxStatus, confirmed: list, failed: list) -> bool:
    """Sort a transaction the venue says is final into confirmed or failed (True), else False."""
    if status.state is TxState.CONFIRMED:
        confirmed.append((held, status))
    elif status.state is TxState.FAILED:
        failed.append((held, error_from_dict({"code": status.error_code or "TX_FAILED",
                                              "message": status.error_message})))
    else:
        return False
    return True


def _window(venue: Venue) -> float:
    """The venue's validity window in seconds (the contract's default for a plugin's nonsense)."""
    try:
        window = float(getattr(venue, "validity_window_s", Venue.validity_window_s))
    except (TypeError, ValueError):
        return Venue.validity_window_s
    return window if window >= 0 else Venue.validity_window_s


def _poll_interval(venue: Venue) -> float:
    """Poll about ten times over the venue's usual confirmation time."""
    return min(POLL_MAX_S, max(POLL_MIN_S, venue.confirmation_hint_ms / 10_000))
