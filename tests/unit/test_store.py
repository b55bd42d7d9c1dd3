from decimal import Decimal

import pytest
import sqlalchemy as sa

from orderengine.clock import utcnow
from orderengine.lifecycle import IllegalTransition, Status
from orderengine.models import order_events
from orderengine.schemas import parse_order_request
from orderengine.store import StaleWork, Work, new_token
from tests.unit.conftest import SOL_USDC


@pytest.fixture
def order(runtime):
    token = new_token()
    event = runtime.store.create(parse_order_request(SOL_USDC), Work(token, None, utcnow()))
    return event.order_id, token


def count_events(runtime, order_id):
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(order_events)
                            .where(order_events.c.order_id == order_id)).scalar()


def test_a_new_order_has_its_pending_event_as_seq_1(runtime, order):
    order_id, _ = order
    events = runtime.store.events(order_id)
    assert [(e.seq, e.status) for e in events] == [(1, Status.PENDING)]
    assert events[0].data["amountIn"] == "1"
    assert runtime.store.get(order_id).amount_in == Decimal("1")


def test_a_transition_appends_the_next_seq_and_updates_the_snapshot_together(runtime, order):
    order_id, token = order
    event = runtime.store.transition(order_id, Status.ROUTING, token=token, attempt=1,
                                     changes={"attempts": 1}, data={"venues": []})
    row = runtime.store.get(order_id)
    assert event.seq == 2 and row.last_seq == 2
    assert row.status == "routing" and row.attempts == 1
    assert [e.seq for e in runtime.store.events(order_id)] == [1, 2]


def test_an_illegal_transition_changes_nothing(runtime, order):
    order_id, token = order
    with pytest.raises(IllegalTransition):
        runtime.store.transition(order_id, Status.CONFIRMED, token=token, data={})
    assert runtime.store.get(order_id).status == "pending"
    assert count_events(runtime, order_id) == 1


def test_a_worker_that_lost_the_order_cannot_write_to_it(runtime, order):
    order_id, _ = order
    with pytest.raises(StaleWork):
        runtime.store.transition(order_id, Status.ROUTING, token="someone-elses-token", data={})
    assert count_events(runtime, order_id) == 1


def test_events_are_published_only_after_they_are_committed(runtime, order):
    order_id, token = order
    seen_in_db_at_publish = []
    publish_many = runtime.bus.publish_many

    def checking_publish(events):
        seen_in_db_at_publish.extend(e.seq in [s.seq for s in runtime.store.events(order_id)] for e in events)
        publish_many(events)

    runtime.store.bus.publish_many = checking_publish
    runtime.store.transition(order_id, Status.ROUTING, token=token, data={})
    assert seen_in_db_at_publish == [True]


def test_terminal_orders_release_their_work_token(runtime, order):
    order_id, token = order
    runtime.store.transition(order_id, Status.ROUTING, token=token, data={})
    runtime.store.transition(order_id, Status.FAILED, token=token, data={"error": {}, "attempts": 1})
    row = runtime.store.get(order_id)
    assert row.work_token is None and row.work_owner is None
    assert runtime.store.claim(order_id, token, "w1") is None


def test_since_returns_only_later_events(runtime, order):
    order_id, token = order
    runtime.store.transition(order_id, Status.ROUTING, token=token, data={})
    assert [e.seq for e in runtime.store.events(order_id, since=1)] == [2]
    assert runtime.store.events(order_id, since=2) == []
