"""The worker's steps: advance one order by one status, then hand it on.

`advance(order_id, token)` is the only task. It claims the order (the token
must still be current), looks at its status and does that status's one step:

  pending/retrying -> routing   start an attempt; quotes are fetched off-thread
  routing          -> building  record the decision, then send the swap
  building         -> submitted the swap is sent under a client tx id
                                (order:attempt); on resume we first ask the
                                venue whether it got it, never send blind
  submitted        -> confirmed/retrying/failed  ask the venue for the tx

Then it schedules the next step and returns: no worker thread waits for a
quote or a confirmation. A new attempt starts only after the venue said the
last one definitely failed (or, for a send it refused, that it never got it),
so an order is never filled twice.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from decimal import Decimal
from typing import Any, Callable

from orderengine.amounts import decimal_str
from orderengine.clock import after_ms, utcnow
from orderengine.config import Settings
from orderengine.errors import ExecutionError, VenueUnavailable, error_from_dict
from orderengine.lifecycle import IllegalTransition, Status
from orderengine.routing import QuoteFetcher, decide
from orderengine.store import OrderStore, StaleWork, Version, Work
from orderengine.tokens import by_symbol
from orderengine.venue import SwapRequest, TxState, TxStatus, Venue

log = logging.getLogger(__name__)

PRICE_PLACES = Decimal("1e-12")
SEND_RECHECK_S = 1.0        # a send whose outcome we could not learn is looked up again after this
POLL_MIN_S = 0.1            # confirmation polls: no more often than this
POLL_MAX_S = 2.0
EARLY_TOLERANCE_S = 0.02    # a wake-up this early is treated as on time
STEP_RETRY_S = 2.0          # a step that raised runs again after this

Enqueue = Callable[[str, str, "dict[str, Any] | None"], None]


def new_worker_id() -> str:
    """host:pid:random, within the 64 characters the tables hold."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OrderExecutor:
    def __init__(self, settings: Settings, store: OrderStore, venues: dict[str, Venue],
                 fetcher: QuoteFetcher, throttle, enqueue: Enqueue, later: Callable[[float, Callable[[], None]], None],
                 worker_id: str) -> None:
        self.settings = settings
        self.store = store
        self.venues = venues
        self.fetcher = fetcher
        self.throttle = throttle
        self.enqueue = enqueue
        self.later = later
        self.worker_id = worker_id

    # --- the task ----------------------------------------------------------

    def advance(self, order_id: str, token: str, payload: dict[str, Any] | None = None) -> None:
        try:
            self._advance(order_id, token, payload)
        except (StaleWork, IllegalTransition):
            log.info("order moved on without this step; step abandoned", extra={"order_id": order_id})
        except Exception:
            # Every step can be run again (writes are guarded by token and seq, sends by
            # the client tx id), so a step that broke - the database went away - is.
            log.exception("step failed; it runs again shortly", extra={"order_id": order_id})
            self.later(STEP_RETRY_S, lambda: self.enqueue(order_id, token, payload))

    def _advance(self, order_id: str, token: str, payload: dict[str, Any] | None) -> None:
        row = self.store.claim(order_id, token, self.worker_id)
        if row is None:
            log.debug("stale step dropped", extra={"order_id": order_id})
            return
        wait = (row.work_due_at - utcnow()).total_seconds() if row.work_due_at else 0.0
        if wait > EARLY_TOLERANCE_S and payload is None:
            self._wake_in(order_id, token, wait)  # handed to us early (a hand-back, a sweep)
            return
        step = {
            Status.PENDING: self._start_attempt,
            Status.RETRYING: self._start_attempt,
            Status.ROUTING: self._route,
            Status.BUILDING: self._send,
            Status.SUBMITTED: self._settle,
        }[Status(row.status)]
        step(row, token, payload)

    # --- steps -------------------------------------------------------------

    def _start_attempt(self, row: Any, token: str, payload: dict | None) -> None:
        if row.status == Status.PENDING.value:
            delay = self.throttle.acquire()
            if delay > 0:
                log.info("order throttled", extra={"order_id": row.id, "wait_ms": int(delay * 1000)})
                self._wake_in(row.id, token, delay)
                return
        attempt = row.attempts + 1
        self.store.transition(row.id, Status.ROUTING, token=token, attempt=attempt,
                              changes={"attempts": attempt},
                              data={"venues": sorted(self.venues)},
                              work=Work(token, self.worker_id, utcnow()), current=Version.of(row))
        self._fetch_quotes(row, token, attempt)

    def _fetch_quotes(self, row: Any, token: str, attempt: int) -> None:
        token_in, token_out = by_symbol(row.token_in), by_symbol(row.token_out)

        def quoted(outcomes) -> None:
            try:
                decision = decide(outcomes, token_in, token_out, row.amount_in, row.slippage_bps)
                payload = {"attempt": attempt, "decision": decision}
            except ExecutionError as exc:
                payload = {"attempt": attempt, "error": exc.to_dict(),
                           "quotes": [o.to_dict() for o in outcomes]}
            self.later(0, lambda: self.enqueue(row.id, token, payload))  # retried while the queue is down

        self.fetcher.fetch(token_in, token_out, row.amount_in, quoted)

    def _route(self, row: Any, token: str, payload: dict | None) -> None:
        if not payload or payload.get("attempt") != row.attempts:
            self._fetch_quotes(row, token, row.attempts)  # resumed: quotes were lost with a worker
            return
        if "error" in payload:
            log.info("no route", extra={"order_id": row.id, "attempt": row.attempts,
                                        "quotes": payload.get("quotes"), "error": payload["error"]})
            self._attempt_failed(row.id, token, row.attempts, error_from_dict(payload["error"]),
                                 Version.of(row))
            return
        decision = dict(payload["decision"], clientTxId=f"{row.id}:{row.attempts}")
        log.info("routing decision", extra={"order_id": row.id, "attempt": row.attempts,
                                            "venue": decision["venue"], "expected_out": decision["expectedOut"],
                                            "min_amount_out": decision["minAmountOut"],
                                            "quotes": decision["quotes"]})
        building = self.store.transition(row.id, Status.BUILDING, token=token, data=decision,
                                         changes={"venue": decision["venue"]}, current=Version.of(row))
        self._submit(row, token, decision, Version.after(building), known_unsent=True)

    def _send(self, row: Any, token: str, payload: dict | None) -> None:
        """Resume an order stopped in `building`: the swap may or may not have gone out."""
        building = self.store.last_event(row.id, Status.BUILDING)
        self._submit(row, token, building.data, Version.of(row), known_unsent=False)

    def _submit(self, row: Any, token: str, decision: dict, current: Version, known_unsent: bool) -> None:
        venue = self.venues.get(decision["venue"])
        client_tx_id = decision["clientTxId"]
        if venue is None:
            log.error("the venue of an order in flight is not loaded; waiting for it",
                      extra={"order_id": row.id, "venue": decision["venue"]})
            self._wake_in(row.id, token, 30.0)
            return
        try:
            status = TxStatus(TxState.UNKNOWN) if known_unsent else venue.lookup(client_tx_id)
            if status.state is TxState.UNKNOWN:
                swap = SwapRequest(decision["pool"], by_symbol(row.token_in), by_symbol(row.token_out),
                                   row.amount_in, Decimal(decision["minAmountOut"]))
                signature = venue.execute(swap, client_tx_id)
            else:
                signature = status.signature
        except ExecutionError as exc:
            if isinstance(exc, VenueUnavailable):
                self._send_unknown(row, token, venue, client_tx_id, exc)
                return
            signature = self._refused(row, token, venue, client_tx_id, exc, current)
            if signature is None:
                return
        except Exception as exc:
            self._send_unknown(row, token, venue, client_tx_id, exc)
            return
        first_poll = venue.confirmation_hint_ms / 1000 * 0.8
        self.store.transition(row.id, Status.SUBMITTED, token=token,
                              data={"venue": venue.name, "txHash": signature},
                              changes={"tx_hash": signature, "venue": venue.name},
                              work=Work(token, self.worker_id, after_ms(first_poll * 1000)), current=current)
        self._wake_in(row.id, token, first_poll, record=False)

    def _send_unknown(self, row: Any, token: str, venue: Venue, client_tx_id: str, exc: Exception) -> None:
        """The send's outcome is unknown: look it up again shortly, never send blind."""
        log.warning("send outcome unknown; will ask the venue", extra={
            "order_id": row.id, "venue": venue.name, "client_tx_id": client_tx_id, "error": str(exc)})
        self._wake_in(row.id, token, SEND_RECHECK_S)

    def _refused(self, row: Any, token: str, venue: Venue, client_tx_id: str, exc: ExecutionError,
                 current: Version) -> str | None:
        """The venue refused the send. If it also says it never received the
        transaction, the attempt failed; if it has it after all, go on with it."""
        try:
            status = venue.lookup(client_tx_id)
        except Exception as lookup_error:
            self._send_unknown(row, token, venue, client_tx_id, lookup_error)
            return None
        if status.state is TxState.UNKNOWN:
            self._attempt_failed(row.id, token, row.attempts, exc, current)
            return None
        return status.signature

    def _settle(self, row: Any, token: str, payload: dict | None) -> None:
        venue = self.venues.get(row.venue)
        if venue is None:
            self._wake_in(row.id, token, 30.0)
            return
        try:
            status = venue.status(row.tx_hash)
        except Exception as exc:
            log.warning("status query failed; will ask again", extra={"order_id": row.id, "error": str(exc)})
            self._wake_in(row.id, token, POLL_MAX_S)
            return
        if status.state is TxState.CONFIRMED:
            price = (status.amount_out / status.amount_in).quantize(PRICE_PLACES)
            self.store.transition(row.id, Status.CONFIRMED, token=token, data={
                "venue": venue.name, "txHash": row.tx_hash, "amountOut": decimal_str(status.amount_out),
                "executedPrice": decimal_str(price), "fee": decimal_str(status.fee)},
                changes={"amount_out": status.amount_out, "executed_price": price, "error": None},
                current=Version.of(row))
            log.info("order confirmed", extra={"order_id": row.id, "venue": venue.name,
                                               "amount_out": decimal_str(status.amount_out)})
        elif status.state is TxState.FAILED:
            self._attempt_failed(row.id, token, row.attempts, error_from_dict(
                {"code": status.error_code or "TX_FAILED", "message": status.error_message}), Version.of(row))
        elif status.state is TxState.UNKNOWN:
            # The venue forgot a transaction it gave us a signature for: not safe to
            # resend; keep asking and say so loudly.
            log.error("venue does not know a submitted transaction", extra={"order_id": row.id})
            self._wake_in(row.id, token, POLL_MAX_S)
        else:  # still pending: poll again (its due time stays that of the first poll)
            self._wake_in(row.id, token, _poll_interval(venue), record=False)

    def _attempt_failed(self, order_id: str, token: str, attempt: int, error: ExecutionError,
                        current: Version) -> None:
        body = {"code": error.code, "message": error.message}
        if error.retryable and attempt < self.settings.max_attempts:
            delay_ms = self.settings.retry_backoff_ms * 2 ** (attempt - 1)
            self.store.transition(order_id, Status.RETRYING, token=token,
                                  data={"attempt": attempt, "error": body, "retryInMs": delay_ms},
                                  changes={"error": body},
                                  work=Work(token, self.worker_id, after_ms(delay_ms)), current=current)
            log.info("attempt failed; retrying", extra={"order_id": order_id, "attempt": attempt,
                                                        "error": body, "retry_in_ms": delay_ms})
            self._wake_in(order_id, token, delay_ms / 1000, record=False)
        else:
            self.store.transition(order_id, Status.FAILED, token=token,
                                  data={"error": body, "attempts": attempt}, changes={"error": body},
                                  current=current)
            log.info("order failed", extra={"order_id": order_id, "attempts": attempt, "error": body})

    # --- scheduling ----------------------------------------------------------

    def _wake_in(self, order_id: str, token: str, seconds: float, record: bool = True) -> None:
        """Run the order's next step in `seconds`, held by this worker till then."""
        if record and not self.store.set_work(order_id, token, Work(token, self.worker_id,
                                                                     after_ms(seconds * 1000))):
            return
        self.later(seconds, lambda: self.enqueue(order_id, token, None))


def _poll_interval(venue: Venue) -> float:
    """Poll about ten times over the venue's usual confirmation time."""
    return min(POLL_MAX_S, max(POLL_MIN_S, venue.confirmation_hint_ms / 10_000))
