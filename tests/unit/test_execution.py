"""The worker, in-process: intake -> queue -> routing -> execution -> event log."""
import datetime as dt


from orderengine.clock import utcnow
from orderengine.errors import InsufficientLiquidity
from orderengine.intake import submit_order
from orderengine.lifecycle import Status
from orderengine.execution import Held
from orderengine.runtime import Runtime, WorkerServices
from orderengine.schemas import parse_order_request
from orderengine.store import Work, new_token
from orderengine.worker import EmbeddedWorker
from tests.fakes import FakeVenue, registry_of
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal

HAPPY = ["pending", "routing", "building", "submitted", "confirmed"]


def run_to_the_end(runtime, order_id):
    """Start a worker on a runtime prepared by the test; the order's final snapshot."""
    worker = EmbeddedWorker(runtime)
    worker.start()
    try:
        return wait_terminal(runtime, order_id)
    finally:
        worker.stop()


def submit(runtime, **fields):
    return submit_order(runtime, parse_order_request({**SOL_USDC, **fields})).order_id


def statuses(runtime, order_id):
    return [e.status.value for e in runtime.store.events(order_id)]


def test_an_order_runs_to_confirmed_on_the_venue_that_pays_most(runtime, worker, venues):
    order_id = submit(runtime)
    row = wait_terminal(runtime, order_id)
    events = runtime.store.events(order_id)
    assert [e.status.value for e in events] == HAPPY
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert row.status == "confirmed" and row.venue == "alpha"
    assert str(row.amount_out) == events[-1].data["amountOut"] == "149.625"
    assert events[2].data["minAmountOut"] == "148.876875"
    assert venues[0].fills == 1 and venues[1].fills == 0


def test_a_failed_attempt_is_retried_with_fresh_quotes_and_doubling_backoff(start_engine):
    venue = FakeVenue("alpha", fail_tx=2)
    rt = start_engine(venue, retry_backoff_ms=40, max_attempts=3)
    order_id = submit(rt)
    row = wait_terminal(rt, order_id)
    events = rt.store.events(order_id)
    assert row.status == "confirmed" and row.attempts == 3
    assert [e.status.value for e in events] == (
        ["pending"] + ["routing", "building", "submitted", "retrying"] * 2 + ["routing", "building", "submitted", "confirmed"])
    retries = [e for e in events if e.status is Status.RETRYING]
    assert [(r.data["attempt"], r.data["retryInMs"]) for r in retries] == [(1, 40), (2, 80)]
    assert all(r.data["error"]["code"] == "TX_FAILED" for r in retries)
    for retry in retries:
        next_routing = next(e for e in events if e.seq == retry.seq + 1)
        assert next_routing.status is Status.ROUTING
        assert next_routing.at - retry.at >= dt.timedelta(milliseconds=retry.data["retryInMs"])
    assert len([e for e in events if e.status is Status.BUILDING]) == 3  # fresh quotes each attempt
    assert venue.fills == 1


def test_an_order_fails_after_max_attempts_with_the_reason_kept(start_engine):
    rt = start_engine(FakeVenue("alpha", fail_tx=99), max_attempts=2)
    row = wait_terminal(rt, submit(rt))
    last = rt.store.events(row.id)[-1]
    assert row.status == "failed" and row.attempts == 2
    assert row.error["code"] == "TX_FAILED"
    assert last.data == {"error": row.error, "attempts": 2}


def test_slippage_beyond_tolerance_is_rejected_as_slippage_exceeded(start_engine):
    venue = FakeVenue("alpha", fail_tx=99, tx_error="SLIPPAGE_EXCEEDED")
    rt = start_engine(venue, max_attempts=1)
    row = wait_terminal(rt, submit(rt, slippageBps=0))
    assert row.status == "failed" and row.error["code"] == "SLIPPAGE_EXCEEDED"
    assert venue.fills == 0


def test_a_non_retryable_error_fails_the_order_at_once(start_engine):
    rt = start_engine(FakeVenue("alpha", max_in="0.5"))
    row = wait_terminal(rt, submit(rt))
    assert row.status == "failed" and row.attempts == 1
    assert row.error["code"] == InsufficientLiquidity.code


def test_a_send_whose_outcome_is_unknown_is_looked_up_not_sent_again(start_engine):
    venue = FakeVenue("alpha", fail_sends=1)  # the tx lands, but the caller sees an error
    rt = start_engine(venue)
    row = wait_terminal(rt, submit(rt))
    assert row.status == "confirmed"
    assert venue.executions == 1 and venue.fills == 1


def test_an_order_stopped_in_building_after_its_swap_was_sent_is_never_filled_twice(runtime, venues):
    """The worker died between sending the swap and recording `submitted`."""
    order_id = submit(runtime)  # nobody runs it yet: no worker
    token = runtime.store.get(order_id).work_token
    runtime.store.transition(order_id, Status.ROUTING, token=token, attempt=1, changes={"attempts": 1}, data={})
    decision = {"venue": "alpha", "pool": "alpha-pool", "minAmountOut": "140", "clientTxId": f"{order_id}:1",
                "quotes": [], "expectedOut": "149.625", "plan": []}
    runtime.store.transition(order_id, Status.BUILDING, token=token, data=decision)
    from orderengine.venue import SwapRequest
    from orderengine.tokens import SOL, USDC
    from decimal import Decimal
    venues[0].execute(SwapRequest("alpha-pool", SOL, USDC, Decimal("1"), Decimal("140")), f"{order_id}:1")
    runtime.store.claim(order_id, token, "dead-worker")  # held by a worker that no longer beats

    row = run_to_the_end(runtime, order_id)
    assert row.status == "confirmed"
    assert statuses(runtime, order_id) == ["pending", "routing", "building", "submitted", "confirmed"]
    assert venues[0].executions == 1 and venues[0].fills == 1


def test_a_step_from_before_a_takeover_is_dropped(runtime, venues):
    order_id = submit(runtime)
    services = WorkerServices(runtime)  # not started: nothing claims the order
    try:
        stale = Held.of(runtime.store.get(order_id))
        stale.token = "stale-token"
        services.executor.run([stale])
    finally:
        services.executor.close()
        services.fetcher.close()
    assert statuses(runtime, order_id) == ["pending"]
    assert venues[0].executions == venues[1].executions == 0


def test_waiting_for_quotes_holds_no_worker_thread(settings):
    rt = Runtime(settings.replace(worker_concurrency=1, quote_timeout_ms=20_000),
                 registry=registry_of(FakeVenue("slow", quote_delay=5)))
    w = EmbeddedWorker(rt)
    w.start()
    try:
        ids = [submit(rt) for _ in range(3)]
        # One thread, quotes that take 5 s: all three start routing long before any quote is back.
        wait_for(lambda: all(rt.store.get(i).status == "routing" for i in ids), timeout=3)
    finally:
        w.consumer.stop(graceful=False)
        rt.close()


def test_max_orders_per_minute_holds_back_the_order_over_the_limit(start_engine):
    rt = start_engine(FakeVenue("alpha"), max_orders_per_minute=1)
    ids = [submit(rt), submit(rt)]

    def one_ran_one_held() -> bool:
        rows = [rt.store.get(i) for i in ids]
        ran = [r for r in rows if r.status == "confirmed"]
        # whichever the worker started second waits for the window, asleep: due ~a minute away
        held = [r for r in rows
                if r.status == "pending" and r.work_due_at > utcnow() + dt.timedelta(seconds=30)]
        return len(ran) == 1 and len(held) == 1

    wait_for(one_ran_one_held)
    routings = [e for i in ids for e in rt.store.events(i) if e.status is Status.ROUTING]
    assert len(routings) == 1


def test_an_order_held_by_a_dead_worker_is_taken_over(runtime, venues):
    order_id = submit(runtime)
    token = runtime.store.get(order_id).work_token
    runtime.store.set_work(order_id, token, Work(token, "worker-that-died", utcnow()))
    row = run_to_the_end(runtime, order_id)
    assert row.status == "confirmed" and venues[0].fills + venues[1].fills == 1


def test_an_order_whose_wake_up_was_lost_is_claimed_all_the_same(settings, venues):
    rt = Runtime(settings, registry=registry_of(*venues))
    order_id = rt.store.create(parse_order_request(SOL_USDC),
                               Work(new_token(), None, utcnow() - dt.timedelta(seconds=5))).order_id
    w = EmbeddedWorker(rt)  # no message was ever queued: the worker finds it in the database
    w.start()
    try:
        assert wait_terminal(rt, order_id).status == "confirmed"
    finally:
        w.stop()


def test_a_send_the_venue_refused_and_never_received_is_retried(start_engine):
    venue = FakeVenue("alpha", refuse_sends=1)
    rt = start_engine(venue)
    row = wait_terminal(rt, submit(rt))
    events = rt.store.events(row.id)
    assert row.status == "confirmed" and row.attempts == 2
    assert [e.status.value for e in events][:5] == ["pending", "routing", "building", "retrying", "routing"]
    assert venue.fills == 1


def test_an_order_a_worker_already_holds_is_not_withdrawn(runtime):
    order_id = submit(runtime)
    token = runtime.store.get(order_id).work_token
    runtime.store.claim(order_id, token, "a-worker")
    assert runtime.store.withdraw(order_id) is False
    assert runtime.store.get(order_id) is not None and len(runtime.store.events(order_id)) == 1


def test_an_untouched_order_is_withdrawn_with_its_events(runtime):
    order_id = submit(runtime)
    assert runtime.store.withdraw(order_id) is True
    assert runtime.store.get(order_id) is None and runtime.store.events(order_id) == []
