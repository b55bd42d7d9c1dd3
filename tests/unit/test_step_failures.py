"""A step that breaks: its orders run again, each on its own, and hold up no other."""
from decimal import Decimal

from orderengine.intake import submit_order
from orderengine.schemas import parse_order_request
from orderengine.venue import TxState, TxStatus
from tests.fakes import FakeVenue
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal


class OneBadAnswer(FakeVenue):
    """Confirms every transaction, but answers nonsense (amount_in 0) for one client's."""

    def __init__(self, *args, bad_amount: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bad_amount = Decimal(bad_amount)

    def _state(self, tx):
        status = super()._state(tx)
        if tx["amount_in"] == self.bad_amount:
            return TxStatus(TxState.CONFIRMED, tx["signature"], Decimal(0), status.amount_out, status.fee)
        return status


class ShortAnswers(FakeVenue):
    """Its batch status call drops the last item: a plugin bug."""

    def statuses(self, signatures):
        return super().statuses(signatures)[:-1]


def place(runtime, amount):
    return submit_order(runtime, parse_order_request({**SOL_USDC, "amountIn": amount})).order_id


def test_an_order_whose_step_always_breaks_holds_up_none_of_its_batch(start_engine):
    venue = OneBadAnswer("alpha", bad_amount="0.5", confirm_after=1)
    rt = start_engine(venue)
    bad = place(rt, "0.5")
    good = [place(rt, "1"), place(rt, "2"), place(rt, "3")]
    for order_id in good:
        assert wait_terminal(rt, order_id).status == "confirmed"
    assert rt.store.get(bad).status == "submitted"  # it waits for a sane answer, and says so


def test_a_batch_answer_with_an_item_missing_is_asked_again_not_dropped(start_engine, caplog):
    venue = ShortAnswers("alpha")
    rt = start_engine(venue)
    ids = [place(rt, "1"), place(rt, "2")]
    wait_for(lambda: any("items for" in str(getattr(r, "error", "")) for r in caplog.records))
    # asked one at a time after the broken batch, each still gets a wrong-length answer: none is
    # confirmed on a guess, and none is dropped (each is still held, on the worker's timer)
    rows = [rt.store.get(i) for i in ids]
    assert all(r.status == "submitted" and r.work_owner for r in rows)
