"""A step that breaks: its orders run again, each on its own, and hold up no other."""
import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest

from orderengine.intake import submit_order
from orderengine.schemas import parse_order_request
from orderengine.venue import TxState, TxStatus
from tests.fakes import FakeVenue
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal


class OneBadAnswer(FakeVenue):
    """Confirms every transaction, but answers a malformed status (`bad` of the good one)
    for one client's."""

    def __init__(self, *args, bad_amount: str, bad, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bad_amount = Decimal(bad_amount)
        self.bad = bad

    def _state(self, tx):
        status = super()._state(tx)
        if tx["amount_in"] == self.bad_amount and status.state is TxState.CONFIRMED:
            return self.bad(status)
        return status


MALFORMED = {
    "amount_in 0": lambda s: replace(s, amount_in=Decimal(0)),
    "amount_out None": lambda s: replace(s, amount_out=None),
    "amount_out NaN": lambda s: replace(s, amount_out=Decimal("NaN")),
    "amount_out a float": lambda s: replace(s, amount_out=float(s.amount_out)),
    "state a string": lambda s: replace(s, state="confirmed"),
    "not a TxStatus": lambda s: {"state": "confirmed"},
}


class ShortAnswers(FakeVenue):
    """Its batch status call drops the last item: a plugin bug."""

    def statuses(self, signatures):
        return super().statuses(signatures)[:-1]


def place(runtime, amount):
    return submit_order(runtime, parse_order_request({**SOL_USDC, "amountIn": amount})).order_id


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_order_whose_venue_answers_malformed_statuses_holds_up_none_of_its_batch_and_ends(
        start_engine, bad):
    # It used to wait for a sane answer for ever (the step raised on it, and was run again every
    # <= 30 s); now a malformed answer counts as no answer: asked again, then VENUE_UNREACHABLE
    # once STEP_MAX_FAILURES answers in a row were malformed and the validity window has passed
    venue = OneBadAnswer("alpha", bad_amount="0.5", bad=bad, confirm_after=1)
    venue.validity_window_s = 1.0
    rt = start_engine(venue, step_max_failures=3, retry_backoff_ms=50)
    bad_order = place(rt, "0.5")
    good = [place(rt, "1"), place(rt, "2"), place(rt, "3")]
    for order_id in good:
        assert wait_terminal(rt, order_id).status == "confirmed"
    row = wait_terminal(rt, bad_order, timeout=20)
    assert (row.status, row.error["code"]) == ("failed", "VENUE_UNREACHABLE")
    assert "malformed statuses" in row.error["message"] and "may have filled" in row.error["message"]
    events = rt.store.events(bad_order)
    assert [e.status.value for e in events] == ["pending", "routing", "building", "submitted", "failed"]
    assert events[-1].at - events[-2].at >= dt.timedelta(seconds=1.0)  # not before the window's end
    assert events[-1].data["outcome"] == "unknown" and events[-1].data["txHash"] == f"sig-{bad_order}:1"
    assert venue.executions == 4  # never sent again


def test_a_batch_answer_with_an_item_missing_is_asked_again_not_dropped(start_engine, caplog):
    venue = ShortAnswers("alpha")
    rt = start_engine(venue)
    ids = [place(rt, "1"), place(rt, "2")]
    wait_for(lambda: any("items for" in str(getattr(r, "error", "")) for r in caplog.records))
    # asked one at a time after the broken batch, each still gets a wrong-length answer: none is
    # confirmed on a guess, and none is dropped (each is still held, on the worker's timer)
    rows = [rt.store.get(i) for i in ids]
    assert all(r.status == "submitted" and r.work_owner for r in rows)
