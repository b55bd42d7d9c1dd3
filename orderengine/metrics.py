"""Every Prometheus metric the engine exports, defined once, and what feeds and serves them.

Counted where it happens: new orders in the intake, events where the store writes them,
quotes in the quote fetcher, venue calls through `measured_venues`, worker steps with
`step`, open sockets with `counts_socket`, HTTP requests in the /metrics blueprint.
Queue depth is not kept by anyone: `scrape` asks the database at scrape time.

Under gunicorn every process writes its figures to files in PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode, set up by gunicorn.conf.py through
orderengine/metrics_files.py) and /metrics sums them. One process (`orderengine serve`,
`orderengine worker`) reads its own figures directly.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import (
    REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from orderengine.config import ConfigError, Settings
from orderengine.events import Event
from orderengine.lifecycle import TERMINAL, Status
from orderengine.logs import brief
from orderengine.venue import TxState, TxStatus

log = logging.getLogger(__name__)

disable_created_metrics()  # no `_created` series beside every counter: nobody reads them

#: read by prometheus-client itself (when first imported) and by `scrape`
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

ORDERS_CREATED = Counter(
    "orderengine_orders_created_total",
    "Orders accepted by the API: stored and their first step queued (each answered 201).")
ORDER_EVENTS = Counter(
    "orderengine_order_events_total",
    "Events appended to orders' event logs, by status. A terminal status (confirmed, failed, "
    "cancelled) counts the orders that ended so; retrying counts attempts that will be retried.",
    ["status"])
ORDER_ERRORS = Counter(
    "orderengine_order_errors_total",
    "Events that carry an error, by status (retrying: the attempt is retried; failed: the order "
    "ended) and error code (SLIPPAGE_EXCEEDED, NO_ROUTE, EXPIRED, ...).",
    ["status", "code"])
ORDER_SECONDS = Histogram(
    "orderengine_order_duration_seconds",
    "Time from an order's acceptance to its terminal event, by terminal status.",
    ["status"], buckets=(0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600))
QUOTES = Counter(
    "orderengine_quotes_total",
    "Quotes the router asked for, one per order and venue, by venue and outcome: ok (a quote), "
    "error (the venue answered an error; see orderengine_venue_errors_total) or timeout "
    "(no answer within QUOTE_TIMEOUT_MS).",
    ["venue", "outcome"])
VENUE_CALL_SECONDS = Histogram(
    "orderengine_venue_call_seconds",
    "Duration of the worker's calls to a venue, by venue and call (quotes, execute_many, statuses, "
    "lookups); one call carries a batch of orders.",
    ["venue", "call"])
VENUE_ERRORS = Counter(
    "orderengine_venue_errors_total",
    "Errors from venues, by venue, call and code: a call that raised counts once (VENUE_ERROR when "
    "the venue gave no code), and so does each item a venue answered with an error or a failed "
    "transaction.",
    ["venue", "call", "code"])
STEP_SECONDS = Histogram(
    "orderengine_step_seconds",
    "Time a worker step took for one batch of orders, by step, not counting the steps it went "
    "on to in the same call (start_attempts, fetch_quotes, route, send, settle, confirm).",
    ["step"])
STEP_FAILURES = Counter(
    "orderengine_step_failures_total",
    "Worker steps that raised (the database away, a plugin's bad answer), by the step that "
    "raised; their orders run the step again after a backoff.",
    ["step"])
WEBSOCKETS_OPEN = Gauge(
    "orderengine_websockets_open",
    "WebSockets open now (order and stream sockets), across the API's processes.",
    multiprocess_mode="livesum")
HTTP_REQUESTS = Counter(
    "orderengine_http_requests_total",
    "HTTP requests answered, by method, route (the URL rule; 'unmatched' for none) and status class "
    "(2xx, 4xx, 5xx). A WebSocket counts when it closes.",
    ["method", "route", "status"])

# children made once: a labelled metric looks its child up under a lock on every call
_EVENTS = {s.value: ORDER_EVENTS.labels(s.value) for s in Status}
_ENDED = {s.value: ORDER_SECONDS.labels(s.value) for s in TERMINAL}
_PENDING = _EVENTS[Status.PENDING.value]


# --- what the engine calls -----------------------------------------------------------

def orders_created(count: int) -> None:
    """`count` orders were accepted: each is created and has its `pending` event."""
    if count:
        ORDERS_CREATED.inc(count)
        _PENDING.inc(count)


def events_written(events: Iterable[Event]) -> None:
    """These events were committed (any status but the intake's `pending`)."""
    for event in events:
        status = event.status.value
        _EVENTS[status].inc()
        error = event.data.get("error") if isinstance(event.data, dict) else None
        if isinstance(error, dict):
            ORDER_ERRORS.labels(status, str(error.get("code") or "UNKNOWN")).inc()


def order_moved(accepted_at: dt.datetime | None, event: Event) -> None:
    """An order accepted at `accepted_at` moved by `event`: if it ended, how long it took."""
    histogram = _ENDED.get(event.status.value)
    if histogram is not None and accepted_at is not None:
        histogram.observe(max(0.0, (event.at - accepted_at).total_seconds()))


def quotes_fetched(venue: str, outcomes: Iterable[Any]) -> None:
    """The router got these `QuoteOutcome`s from `venue`."""
    ok = error = timeout = 0
    for outcome in outcomes:
        if outcome.quote is not None:
            ok += 1
        elif outcome.error_code == "VENUE_TIMEOUT":
            timeout += 1
        else:
            error += 1
    for name, count in (("ok", ok), ("error", error), ("timeout", timeout)):
        if count:
            QUOTES.labels(venue, name).inc(count)


def http_request(method: str, route: str | None, status: int) -> None:
    HTTP_REQUESTS.labels(method, route or "unmatched", f"{status // 100}xx").inc()


# --- worker steps --------------------------------------------------------------------

_nesting = threading.local()


def step(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a worker step: its duration goes to orderengine_step_seconds{step=name} (less
    the time of the decorated steps it calls), an exception it raises to
    orderengine_step_failures_total, once, under the innermost step that raised it. A method
    called with an empty batch (its argument after `self`) did no step and is not measured."""
    seconds, failures = STEP_SECONDS.labels(name), STEP_FAILURES.labels(name)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if len(args) > 1 and isinstance(args[1], list) and not args[1]:
                return fn(*args, **kwargs)
            outer = getattr(_nesting, "seconds", 0.0)  # what the caller's nested steps took so far
            _nesting.seconds = 0.0
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not getattr(exc, "_orderengine_step_counted", False):
                    failures.inc()
                    try:
                        exc._orderengine_step_counted = True
                    except AttributeError:  # pragma: no cover - an exception without a __dict__
                        pass
                raise
            finally:
                took = time.perf_counter() - started
                seconds.observe(max(0.0, took - _nesting.seconds))
                _nesting.seconds = outer + took
        return timed
    return decorate


# --- venues as the worker sees them ----------------------------------------------------

class MeasuredVenue:
    """A venue whose batch calls are timed and whose errors are counted; everything else is
    the venue's own (attributes are read through)."""

    def __init__(self, venue: Any) -> None:
        self._venue = venue
        name = venue.name
        self._seconds = {call: VENUE_CALL_SECONDS.labels(name, call)
                         for call in ("quotes", "execute_many", "statuses", "lookups")}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._venue, attr)

    def __repr__(self) -> str:
        return f"MeasuredVenue({self._venue!r})"

    def quotes(self, requests):
        return self._call("quotes", self._venue.quotes, requests)

    def execute_many(self, sends):
        return self._call("execute_many", self._venue.execute_many, sends)

    def statuses(self, signatures):
        return self._call("statuses", self._venue.statuses, signatures)

    def lookups(self, client_tx_ids):
        return self._call("lookups", self._venue.lookups, client_tx_ids)

    def _call(self, call: str, method: Callable[[Any], list], items: Any) -> list:
        started = time.perf_counter()
        try:
            answers = method(items)
        except Exception as exc:
            self._error(call, exc)
            raise
        finally:
            self._seconds[call].observe(time.perf_counter() - started)
        for answer in answers if isinstance(answers, list) else ():
            if isinstance(answer, Exception):
                self._error(call, answer)
            elif isinstance(answer, TxStatus) and answer.state is TxState.FAILED:
                VENUE_ERRORS.labels(self._venue.name, call, answer.error_code or "TX_FAILED").inc()
        return answers

    def _error(self, call: str, exc: Exception) -> None:
        VENUE_ERRORS.labels(self._venue.name, call, str(getattr(exc, "code", None) or "VENUE_ERROR")).inc()


def measured_venues(venues: Mapping[str, Any]) -> dict[str, MeasuredVenue]:
    return {name: MeasuredVenue(venue) for name, venue in venues.items()}


# --- sockets -------------------------------------------------------------------------

def counts_socket(handler: Callable[..., None]) -> Callable[..., None]:
    """Decorate a WebSocket handler: the socket counts as open while the handler runs."""
    @functools.wraps(handler)
    def counted(*args: Any, **kwargs: Any) -> None:
        WEBSOCKETS_OPEN.inc()
        try:
            return handler(*args, **kwargs)
        finally:
            WEBSOCKETS_OPEN.dec()
    return counted


# --- serving -------------------------------------------------------------------------

class QueueDepth:
    """orderengine_queue_depth, asked of the database when scraped (one indexed count): the
    figure is the deployment's, whichever process answers, and costs nothing between scrapes."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self):
        family = GaugeMetricFamily(
            "orderengine_queue_depth",
            "Accepted orders not yet submitted to a venue (pending, routing, building, retrying), "
            "across the deployment, read from the database at scrape time.")
        try:
            family.add_metric([], self.store.count_unsubmitted())
        except Exception as exc:  # the database is away: every other figure is still served
            log.warning("queue depth not read", extra={"error": brief(exc, 300)})
            return
        yield family


class _Scrape:
    """The collectors of one scrape, as one registry for the encoder."""

    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from source.collect()


@functools.lru_cache(maxsize=4)
def _multiprocess_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=path)
    return registry


def scrape(settings: Settings, store: Any, accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of the API's exposition: every process's figures summed (gunicorn,
    multiprocess mode) or this process's own (`orderengine serve`), and the queue depth. The
    Prometheus text format, or OpenMetrics when `accept` (the Accept header) asks for it."""
    path = settings.environ.get(MULTIPROC_ENV)
    base = _multiprocess_registry(path) if path else REGISTRY
    encode, content_type = choose_encoder(accept or "")
    return encode(_Scrape(base, QueueDepth(store))), content_type


def serve_worker_metrics(settings: Settings):
    """A worker's own metrics on http://HOST:METRICS_PORT/metrics (any path answers), on a
    thread of its own; None when METRICS_PORT is unset. Returns the server (`shutdown()`)."""
    if settings.metrics_port is None:
        return None
    try:
        server, _thread = start_http_server(settings.metrics_port, addr=settings.host)
    except OSError as exc:
        raise ConfigError(f"METRICS_PORT {settings.metrics_port}: cannot listen on "
                          f"{settings.host}:{settings.metrics_port}: {exc}") from exc
    log.info("worker metrics served", extra={"host": settings.host, "port": settings.metrics_port})
    return server
