"""The store's guards under PostgreSQL's real concurrency: a worker that lost an
order cannot write to it, and two writers racing for one step cannot both win."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from orderengine.clock import utcnow
from orderengine.lifecycle import IllegalTransition, Status
from orderengine.models import order_events
from orderengine.store import Change, StaleWork, Version, Work, new_token
from orderengine.sweeper import Sweeper
from tests.integration.watching import logged_seqs, order_request

pytestmark = pytest.mark.integration

DEAD_WORKER = "gone-host:4242:deadbeef"  # never beat a heartbeat


def new_order(runtime, owner: str | None = None) -> tuple[str, str]:
    token = new_token()
    event = runtime.store.create(order_request(), Work(token, owner, utcnow()))
    return event.order_id, token


def start_attempt(runtime, order_id: str, token: str):
    return runtime.store.transition(order_id, Status.ROUTING, token=token, attempt=1,
                                    changes={"attempts": 1}, data={"venues": sorted(runtime.venues)})


def test_a_transition_with_the_token_the_sweeper_replaced_is_refused_and_logs_nothing(settings, runtime):
    order_id, old_token = new_order(runtime, owner=DEAD_WORKER)
    wakes: list[bool] = []
    sweeper = Sweeper(settings, runtime.store, "live-worker", lambda: wakes.append(True))
    assert sweeper.sweep() == 1  # the order of the dead worker is taken over
    released = runtime.store.get(order_id)
    assert wakes and released.work_owner is None and released.work_token != old_token

    with pytest.raises(StaleWork):
        start_attempt(runtime, order_id, old_token)

    row = runtime.store.get(order_id)
    assert (row.status, row.last_seq, row.work_token) == ("pending", 1, released.work_token)
    assert [e.seq for e in runtime.store.events(order_id)] == [1]


def test_the_new_holder_can_write_after_a_takeover(settings, runtime):
    order_id, _ = new_order(runtime, owner=DEAD_WORKER)
    Sweeper(settings, runtime.store, "live-worker", lambda: None).sweep()
    event = start_attempt(runtime, order_id, runtime.store.get(order_id).work_token)
    assert (event.seq, event.status) == (2, Status.ROUTING)


def test_two_racing_transitions_from_one_state_with_one_token_have_exactly_one_winner(runtime):
    rounds = 20
    for _ in range(rounds):
        order_id, token = new_order(runtime)
        barrier = threading.Barrier(2)
        outcomes: list[object] = []
        lock = threading.Lock()

        def race():
            barrier.wait()
            try:
                result: object = start_attempt(runtime, order_id, token)
            except (StaleWork, IllegalTransition) as exc:
                result = exc
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=race) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        winners = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(outcomes) == 2 and len(winners) == 1, outcomes
        assert runtime.store.get(order_id).last_seq == 2

    seqs = logged_seqs(runtime.engine)
    assert len(seqs) == rounds
    assert all(s == [1, 2] for s in seqs.values()), seqs


def test_the_database_refuses_a_second_event_with_the_same_seq(runtime):
    order_id, _ = new_order(runtime)
    with pytest.raises(sa.exc.IntegrityError):
        with runtime.engine.begin() as conn:
            conn.execute(sa.insert(order_events).values(
                order_id=order_id, seq=1, status="pending", attempt=0, data={}, at=utcnow()))
    assert [e.seq for e in runtime.store.events(order_id)] == [1]


def test_a_batch_moves_only_the_orders_still_at_the_version_it_was_decided_from(runtime):
    fresh = [new_order(runtime) for _ in range(3)]
    moved_on_id, moved_on_token = new_order(runtime)
    start_attempt(runtime, moved_on_id, moved_on_token)  # someone else got there first
    error = {"code": "NO_ROUTE", "message": "no venue quoted"}
    batch = [Change(order_id, token, Version("pending", 1, 0), Status.ROUTING, {"venues": []},
                    attempt=1, changes={"attempts": 1, "error": error})
             for order_id, token in fresh + [(moved_on_id, moved_on_token)]]

    events, stale = runtime.store.transition_many(batch)

    assert sorted(e.order_id for e in events) == sorted(order_id for order_id, _ in fresh)
    assert [c.order_id for c in stale] == [moved_on_id]
    for order_id, _ in fresh:
        row = runtime.store.get(order_id)
        assert (row.status, row.last_seq, row.attempts, row.error) == ("routing", 2, 1, error)
    assert logged_seqs(runtime.engine)[moved_on_id] == [1, 2]  # its own routing event, and no second one
    assert runtime.store.get(moved_on_id).error is None
