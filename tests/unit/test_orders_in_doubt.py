"""Orders in doubt (README, "No order waits forever"): a transaction that may be out and a
venue that cannot say what became of it, or an order past ORDER_TTL_MS whose send may still
land. Neither waits forever, neither is sent twice, and neither is called EXPIRED, which
promises that nothing was sent."""
from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest

from orderengine.clock import skewed, utcnow
from orderengine.execution import Held
from orderengine.intake import submit_order
from orderengine.runtime import Runtime, WorkerServices
from orderengine.schemas import parse_order_request
from orderengine.tokens import SOL, USDC
from orderengine.venue import SwapRequest, TxState, TxStatus, Venue
from tests.fakes import DeafVenue, FakeVenue, LateLanding, registry_of
from tests.unit.conftest import SOL_USDC, wait_terminal
from tests.unit.test_no_order_waits_forever import order_in_building_on


def submit(runtime, **fields):
    return submit_order(runtime, parse_order_request({**SOL_USDC, **fields})).order_id


def statuses(events):
    return [e.status.value for e in events]


# --- a venue that cannot answer: VENUE_UNREACHABLE, bounded by the window AND the failures ----

@pytest.mark.parametrize("where", ["building", "submitted"])
def test_a_venue_that_never_answers_about_a_transaction_ends_it_venue_unreachable_after_its_window(
        start_engine, where):
    # building: the send raised after the venue took it; submitted: the send answered, then silence
    venue = DeafVenue("alpha", fail_sends=1 if where == "building" else 0)
    venue.validity_window_s = 1.5
    rt = start_engine(venue, step_max_failures=2, retry_backoff_ms=50)
    row = wait_terminal(rt, submit(rt), timeout=20)
    events = rt.store.events(row.id)
    steps = ["pending", "routing", "building"] + (["submitted"] if where == "submitted" else [])
    assert statuses(events) == [*steps, "failed"]  # no new attempt
    assert row.error["code"] == "VENUE_UNREACHABLE"
    assert venue.executions == 1 and venue.fills == 1  # it filled; the engine could not learn it
    # two unanswered questions came early; it was still asked until the window was over
    sent, failed = events[-2], events[-1]
    assert len(venue.asked) > 2
    assert failed.at - sent.at >= dt.timedelta(seconds=1.5)
    assert venue.asked[-1] >= sent.at + dt.timedelta(seconds=1.5)
    # what an operator needs to reconcile with the venue
    client_tx_id = f"{row.id}:1"
    assert failed.data["outcome"] == "unknown"
    assert failed.data["venue"] == "alpha" and failed.data["clientTxId"] == client_tx_id
    assert failed.data["txHash"] == (f"sig-{client_tx_id}" if where == "submitted" else None)
    building_at_ms = events[2].at.replace(microsecond=events[2].at.microsecond // 1000 * 1000)  # as sent
    assert dt.datetime.fromisoformat(failed.data["sentAt"].replace("Z", "+00:00")) >= building_at_ms
    message = row.error["message"]
    assert "Outcome unknown" in message and client_tx_id in message and "alpha" in message
    assert failed.data["error"] == row.error


def test_past_its_window_an_order_is_still_asked_about_step_max_failures_times_before_it_ends(start_engine):
    venue = DeafVenue("alpha", fail_sends=1)
    venue.validity_window_s = 0.05  # over before the first lookup
    rt = start_engine(venue, step_max_failures=4, retry_backoff_ms=100)
    row = wait_terminal(rt, submit(rt), timeout=20)
    assert row.error["code"] == "VENUE_UNREACHABLE"
    assert len(venue.asked) == 4 and venue.executions == 1
    gaps = [b - a for a, b in zip(venue.asked, venue.asked[1:])]  # the backoff: 0.2, 0.4, 0.8 s
    assert [g >= dt.timedelta(seconds=0.2 * 2 ** i) for i, g in enumerate(gaps)] == [True] * 3


class UnsignedLookups(FakeVenue):
    """Its send raises after the venue took it; its lookups then say PENDING without the
    signature the engine would record: a malformed answer, not one to go on with."""

    def lookups(self, client_tx_ids):
        self.asked = getattr(self, "asked", 0) + 1
        return [TxStatus(TxState.PENDING) for _ in client_tx_ids]


def test_a_venue_whose_lookups_are_malformed_ends_the_order_venue_unreachable_after_its_window(start_engine):
    venue = UnsignedLookups("alpha", fail_sends=1)
    venue.validity_window_s = 1.0
    rt = start_engine(venue, step_max_failures=3, retry_backoff_ms=50)
    row = wait_terminal(rt, submit(rt), timeout=20)
    events = rt.store.events(row.id)
    assert statuses(events) == ["pending", "routing", "building", "failed"]
    assert row.error["code"] == "VENUE_UNREACHABLE" and "malformed statuses" in row.error["message"]
    assert events[-1].at - events[-2].at >= dt.timedelta(seconds=1.0) and venue.asked >= 3
    assert venue.executions == 1  # never sent again


@pytest.mark.parametrize("where", ["building", "submitted"])
def test_a_venue_that_answers_again_before_the_bound_settles_the_order_normally(start_engine, where):
    venue = DeafVenue("alpha", fail_sends=1 if where == "building" else 0, deaf_for=2)
    venue.validity_window_s = 0.2
    rt = start_engine(venue, step_max_failures=3, retry_backoff_ms=50)
    row = wait_terminal(rt, submit(rt), timeout=20)
    assert row.status == "confirmed", row.error
    assert statuses(rt.store.events(row.id)) == ["pending", "routing", "building", "submitted", "confirmed"]
    assert venue.executions == 1 and venue.fills == 1 and len(venue.asked) >= 3


# --- past ORDER_TTL_MS with a send that may be out: the window rule, not EXPIRED ---------------

TTL_MS = 1500
WINDOW_S = 3.0


def late_landing(lands_on):
    # the send holds past the order's TTL, then fails: the next step is past the deadline
    venue = LateLanding("alpha", hold_s=TTL_MS / 1000, lands_on=lands_on)
    venue.validity_window_s = WINDOW_S
    return venue


def test_an_expired_order_whose_send_may_be_out_is_not_expired_but_dropped_after_the_window(start_engine):
    venue = late_landing(lands_on=None)
    rt = start_engine(venue, order_ttl_ms=TTL_MS, retry_backoff_ms=100)
    order_id = submit(rt)
    row = wait_terminal(rt, order_id, timeout=20)
    events = rt.store.events(order_id)
    assert statuses(events) == ["pending", "routing", "building", "failed"]
    assert row.error["code"] == "TX_DROPPED" and "may have been out" in row.error["message"]
    building, failed = events[2], events[3]
    # the venue said UNKNOWN past the deadline, and that did not end it: the send could still land
    deadline = row.created_at + dt.timedelta(milliseconds=TTL_MS)
    window_end = building.at + dt.timedelta(seconds=WINDOW_S)
    assert deadline <= venue.lookup_times[0] < window_end
    assert failed.at - building.at >= dt.timedelta(seconds=WINDOW_S)
    assert venue.lookup_times[-1] >= window_end
    assert venue.executions == 1  # never sent again past the deadline


def test_an_expired_order_whose_send_lands_late_is_confirmed_once(start_engine):
    venue = late_landing(lands_on=2)
    rt = start_engine(venue, order_ttl_ms=TTL_MS, retry_backoff_ms=100)
    row = wait_terminal(rt, submit(rt), timeout=20)
    assert row.status == "confirmed", row.error
    assert statuses(rt.store.events(row.id)) == ["pending", "routing", "building", "submitted", "confirmed"]
    assert venue.lookup_times[0] >= row.created_at + dt.timedelta(milliseconds=TTL_MS)  # UNKNOWN, past TTL
    assert venue.executions == 1 and venue.fills == 1


# --- taken over in `building`: the worker before may have sent it until ORDER_TTL_MS ----------

TAKEOVER = dict(order_ttl_ms=30_000, venue_call_timeout_ms=5_000)
TAKEOVER_WINDOW_S = 10.0
#: the dead worker's last send may start at created + ORDER_TTL_MS and last VENUE_CALL_TIMEOUT_MS;
#: the window runs from there (created + 45 s here), not from `building` (+ 10 s)
LAST_SEND_S = (TAKEOVER["order_ttl_ms"] + TAKEOVER["venue_call_timeout_ms"]) / 1000


@pytest.fixture
def taken_over(settings):
    """A worker that never sent anything, and an order a dead worker left in `building` on
    `alpha` (whose lookups say UNKNOWN: the dead worker's last send is still on its way)."""
    alpha = FakeVenue("alpha")
    alpha.validity_window_s = TAKEOVER_WINDOW_S
    rt = Runtime(settings.replace(**TAKEOVER), registry=registry_of(alpha))
    services = WorkerServices(rt)  # not started: the test runs its steps, at the moments it says
    order_id = order_in_building_on(rt, "alpha")
    building = rt.store.events(order_id)[2].at

    def step_at(seconds: float):
        """Run the order's step as the new holder would, `seconds` after its `building`."""
        with skewed(building + dt.timedelta(seconds=seconds) - utcnow()):
            services.executor.run([Held.of(rt.store.get(order_id))])
        return rt.store.get(order_id)

    yield rt, alpha, order_id, step_at
    services.executor.close()
    services.fetcher.close()
    rt.close()


def test_an_order_taken_over_in_building_past_its_ttl_waits_while_a_send_of_the_worker_before_can_land(
        taken_over):
    rt, alpha, order_id, step_at = taken_over
    # past the TTL, past the window from `building`, and past the window from the TTL alone
    row = step_at(LAST_SEND_S - 3)
    assert row.status == "building", row.error  # not TX_DROPPED: the dead worker's send may land
    assert alpha.executions == 0  # and nothing is sent past the TTL
    # the dead worker's last send lands: the order goes on with it, filled once
    swap = SwapRequest("alpha-pool", SOL, USDC, Decimal("1"), Decimal("140"))
    alpha.execute(swap, f"{order_id}:1")
    row = step_at(LAST_SEND_S + TAKEOVER_WINDOW_S - 1)
    assert row.status == "submitted" and row.tx_hash == f"sig-{order_id}:1"
    assert alpha.executions == 1 and alpha.fills == 1


def test_an_order_taken_over_in_building_past_its_ttl_is_dropped_once_no_send_can_land(taken_over):
    rt, alpha, order_id, step_at = taken_over
    assert step_at(LAST_SEND_S + TAKEOVER_WINDOW_S - 1).status == "building"
    row = step_at(LAST_SEND_S + TAKEOVER_WINDOW_S + 0.5)
    assert (row.status, row.error["code"]) == ("failed", "TX_DROPPED")
    assert [e.status.value for e in rt.store.events(order_id)] == ["pending", "routing", "building", "failed"]
    assert alpha.executions == 0


def test_an_order_taken_over_in_building_on_a_venue_not_loaded_waits_for_the_last_possible_send(
        settings, monkeypatch):
    monkeypatch.setattr(Venue, "validity_window_s", TAKEOVER_WINDOW_S)  # assumed for a venue not loaded
    rt = Runtime(settings.replace(**TAKEOVER), registry=registry_of(FakeVenue("alpha")))
    services = WorkerServices(rt)
    try:
        order_id = order_in_building_on(rt, "gone")
        building = rt.store.events(order_id)[2].at

        def step_at(seconds):
            with skewed(building + dt.timedelta(seconds=seconds) - utcnow()):
                services.executor.run([Held.of(rt.store.get(order_id))])
            return rt.store.get(order_id)

        row = step_at(LAST_SEND_S + TAKEOVER_WINDOW_S - 1)
        assert row.status == "building" and row.work_owner is None  # handed back, not failed
        row = step_at(LAST_SEND_S + TAKEOVER_WINDOW_S + 0.5)
        assert (row.status, row.error["code"]) == ("failed", "VENUE_UNAVAILABLE")
    finally:
        services.executor.close()
        services.fetcher.close()
        rt.close()


def test_no_send_starts_past_the_ttl_even_when_the_lookup_before_it_ends_past_it(settings):
    class SlowLookups(FakeVenue):
        def lookups(self, client_tx_ids):
            time.sleep(1.2)  # asked within the TTL, answers after it
            return super().lookups(client_tx_ids)

    alpha = SlowLookups("alpha")
    rt = Runtime(settings.replace(order_ttl_ms=1000, venue_call_timeout_ms=5_000),
                 registry=registry_of(alpha))
    services = WorkerServices(rt)
    try:
        order_id = order_in_building_on(rt, "alpha")
        services.executor.run([Held.of(rt.store.get(order_id))])
        row = rt.store.get(order_id)
        assert row.status == "building" and alpha.executions == 0  # not sent: waits out the window
    finally:
        services.executor.close()
        services.fetcher.close()
        rt.close()
