"""No order waits forever, and none is filled twice on the way to its end (README, "No order
waits forever"): a step that keeps breaking, a venue that keeps failing sends, a transaction
the venue forgot, a venue that is not loaded, a quote that raises anything."""
from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest

from orderengine.clock import utcnow
from orderengine.errors import VenueUnavailable
from orderengine.execution import Held
from orderengine.intake import submit_order
from orderengine.lifecycle import Status
from orderengine.runtime import WorkerServices
from orderengine.schemas import parse_order_request
from orderengine.store import Work, new_token
from orderengine.venue import Venue
from tests.fakes import BrokenSends, FakeVenue, ForgetfulVenue
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal


def submit(runtime, **fields):
    return submit_order(runtime, parse_order_request({**SOL_USDC, **fields})).order_id


def statuses(runtime, order_id):
    return [e.status.value for e in runtime.store.events(order_id)]


class BrokenThrottle:
    """The throttle's store is away: every attempt start breaks before anything is sent."""

    def __init__(self) -> None:
        self.calls = 0

    def acquire(self) -> float:
        self.calls += 1
        raise RuntimeError("throttle store unreachable")


def test_a_step_that_always_breaks_before_any_send_ends_failed_step_failed_after_the_bounded_retries(
        start_engine):
    venue = FakeVenue("alpha")
    rt = start_engine(venue, step_max_failures=3, retry_backoff_ms=20)
    throttle = rt.worker.executor.throttle = BrokenThrottle()
    row = wait_terminal(rt, submit(rt), timeout=15)
    assert row.status == "failed" and row.error["code"] == "STEP_FAILED"
    assert "_start_attempts" in row.error["message"] and "RuntimeError" in row.error["message"]
    assert throttle.calls == 3
    assert statuses(rt, row.id) == ["pending", "failed"]
    assert venue.executions == 0


def test_a_venue_whose_sends_always_raise_fails_the_order_after_the_bounded_retries_with_backoff(
        start_engine):
    venue = BrokenSends("alpha")
    venue.validity_window_s = 2.5
    rt = start_engine(venue, step_max_failures=4, retry_backoff_ms=100)
    row = wait_terminal(rt, submit(rt), timeout=20)
    assert row.status == "failed" and row.error["code"] == "STEP_FAILED"
    assert "ConnectionError" in row.error["message"] and "_send" in row.error["message"]
    events = rt.store.events(row.id)
    assert [e.status.value for e in events] == ["pending", "routing", "building", "failed"]  # no new attempt
    assert venue.executions == 4  # then no more sends: only lookups until the window is over
    gaps = [b - a for a, b in zip(venue.send_times, venue.send_times[1:])]
    assert [round(g, 1) >= 0.1 * 2 ** i for i, g in enumerate(gaps)] == [True] * 3  # 0.1, 0.2, 0.4 s
    # a send that broke may still land until the window is over: the order fails only after it
    assert events[3].at - events[2].at >= dt.timedelta(seconds=2.5)


def test_a_venue_that_says_it_is_unavailable_on_every_send_fails_the_order_with_its_own_code(start_engine):
    venue = BrokenSends("alpha", error=VenueUnavailable("alpha's RPC node is down"))
    venue.validity_window_s = 0.2
    rt = start_engine(venue, step_max_failures=2, retry_backoff_ms=20)
    row = wait_terminal(rt, submit(rt), timeout=15)
    assert row.status == "failed" and row.error["code"] == "VENUE_UNAVAILABLE"
    assert "RPC node is down" in row.error["message"]
    assert venue.executions == 2


def test_a_transaction_the_venue_forgets_fails_tx_dropped_only_after_its_validity_window_and_a_last_lookup(
        start_engine):
    venue = ForgetfulVenue("alpha")
    venue.validity_window_s = 1.5
    rt = start_engine(venue)
    row = wait_terminal(rt, submit(rt), timeout=15)
    events = rt.store.events(row.id)
    assert [e.status.value for e in events] == ["pending", "routing", "building", "submitted", "failed"]
    assert row.error["code"] == "TX_DROPPED"
    submitted, failed = events[3], events[4]
    assert failed.at - submitted.at >= dt.timedelta(seconds=1.5)
    assert venue.lookup_times and venue.lookup_times[-1] >= submitted.at + dt.timedelta(seconds=1.5)
    assert venue.executions == 1  # never sent again


def test_a_forgotten_transaction_that_a_last_lookup_finds_is_confirmed_not_dropped(start_engine):
    class FoundByLookup(ForgetfulVenue):
        def lookup(self, client_tx_id):
            super().lookup(client_tx_id)
            return FakeVenue.lookup(self, client_tx_id)

        def execute(self, swap, client_tx_id):
            FakeVenue.execute(self, swap, client_tx_id)  # recorded, so lookup finds it
            return f"sig-{client_tx_id}"

    venue = FoundByLookup("alpha")
    venue.validity_window_s = 0.5
    rt = start_engine(venue)
    row = wait_terminal(rt, submit(rt), timeout=15)
    assert row.status == "confirmed" and venue.fills == 1


def order_in_building_on(runtime, venue_name: str) -> str:
    """What a worker that had `venue_name` leaves when it dies after recording `building`."""
    token = new_token()
    order_id = runtime.store.create(parse_order_request(SOL_USDC), Work(token, None, utcnow())).order_id
    runtime.store.transition(order_id, Status.ROUTING, token=token, attempt=1, changes={"attempts": 1}, data={})
    runtime.store.transition(order_id, Status.BUILDING, token=token, changes={"venue": venue_name}, data={
        "venue": venue_name, "pool": f"{venue_name}-pool", "minAmountOut": "140", "quotes": [],
        "expectedOut": "149.625", "plan": [], "clientTxId": f"{order_id}:1"})
    return order_id


def test_an_order_maybe_sent_on_a_venue_not_loaded_is_left_to_others_then_fails_after_the_window(
        start_engine, monkeypatch, caplog):
    monkeypatch.setattr(Venue, "validity_window_s", 2.0)  # what is assumed for a venue not loaded here
    alpha = FakeVenue("alpha")
    rt = start_engine(alpha, order_ttl_ms=1000, venue_call_timeout_ms=500)
    order_id = order_in_building_on(rt, "gone")
    # inside the window (which runs from the last possible send: created + TTL + call timeout,
    # 3.5 s from now): a worker without the venue does not take it (nor keep taking it back)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        row = rt.store.get(order_id)
        assert row.status == "building" and row.work_owner is None
        assert not [r for r in caplog.records if "handing it to a worker" in r.getMessage()]
        time.sleep(0.05)
    row = wait_terminal(rt, order_id, timeout=15)
    assert row.status == "failed" and row.error["code"] == "VENUE_UNAVAILABLE"
    assert statuses(rt, order_id) == ["pending", "routing", "building", "failed"]  # no new attempt
    # the dead worker may have sent it again until ORDER_TTL_MS, each send lasting up to
    # VENUE_CALL_TIMEOUT_MS: the window runs from there
    last_send = rt.store.get(order_id).created_at + dt.timedelta(milliseconds=1000 + 500)
    assert rt.store.events(order_id)[-1].at >= last_send + dt.timedelta(seconds=2)
    assert alpha.executions == 0


def test_an_order_maybe_sent_on_a_venue_not_loaded_here_is_finished_by_a_worker_that_has_it(start_engine):
    gone = FakeVenue("gone")
    without = start_engine(FakeVenue("alpha"))
    order_id = order_in_building_on(without, "gone")
    held = without.store.get(order_id)
    without.store.set_work(order_id, held.work_token, Work(held.work_token, without.worker.worker_id, utcnow()))
    without.worker.executor.run([Held.of(without.store.get(order_id))])  # it finds the venue missing
    assert without.store.get(order_id).work_owner is None  # handed back
    start_engine(gone)  # a worker that has the venue
    row = wait_terminal(without, order_id, timeout=10)
    assert row.status == "confirmed" and row.venue == "gone" and gone.fills == 1


def test_an_attempt_whose_venue_is_not_loaded_before_anything_was_sent_fails_and_is_retried(runtime):
    order_id = order_in_building_on(runtime, "gone")
    services = WorkerServices(runtime)  # not started: the test runs the step itself
    try:
        held = Held.of(runtime.store.get(order_id))
        held.decision = runtime.store.last_events([order_id], Status.BUILDING)[order_id].data
        services.executor._send([held], known_unsent=True)
    finally:
        services.executor.close()
        services.fetcher.close()
    row = runtime.store.get(order_id)
    assert row.status == "retrying" and row.error["code"] == "VENUE_UNAVAILABLE"


class RaisesAnything(FakeVenue):
    def quote(self, token_in, token_out, amount_in):
        raise ZeroDivisionError("a plugin's bug")


class AnswersNonsense(FakeVenue):
    def quotes(self, requests):
        return [None for _ in requests]


@pytest.mark.parametrize("broken", [RaisesAnything("broken"), AnswersNonsense("broken")],
                         ids=["raises", "answers-nonsense"])
def test_a_quote_that_raises_anything_leaves_that_venue_out_with_the_reason(start_engine, broken):
    rt = start_engine(broken, FakeVenue("alpha"))
    row = wait_terminal(rt, submit(rt), timeout=10)
    assert row.status == "confirmed" and row.venue == "alpha"
    building = rt.store.events(row.id)[2]
    left_out = next(q for q in building.data["quotes"] if q["venue"] == "broken")
    assert left_out["error"]["code"] == "VENUE_ERROR" and left_out["error"]["message"]


def test_an_order_whose_only_venue_quotes_nonsense_ends_failed_no_route_not_stuck_in_routing(start_engine):
    rt = start_engine(AnswersNonsense("broken"), max_attempts=2)
    row = wait_terminal(rt, submit(rt), timeout=10)
    assert row.status == "failed" and row.error["code"] == "NO_ROUTE" and row.attempts == 2


def test_a_malformed_quote_is_left_out_not_trusted(start_engine):
    class NoneAmount(FakeVenue):
        def quotes(self, requests):
            return [q.__class__(**{**q.__dict__, "amount_out": None}) for q in super().quotes(requests)]

    rt = start_engine(NoneAmount("broken"), FakeVenue("alpha", price="100"))
    row = wait_terminal(rt, submit(rt), timeout=10)
    assert row.status == "confirmed" and row.venue == "alpha"
    assert row.amount_out == Decimal("99.75")
