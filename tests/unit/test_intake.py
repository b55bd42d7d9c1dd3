"""Group commit at intake: concurrent POSTs share one transaction, one queue push and one
publish, and still each get their own answer."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from orderengine.errors import ServiceUnavailable
from orderengine.intake import Intake
from orderengine.models import order_events, orders
from orderengine.schemas import parse_order_request
from tests.unit.conftest import SOL_USDC

GROUP = 12


def count(runtime, table) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def count_commits(runtime) -> list[int]:
    commits = [0]

    @sa.event.listens_for(runtime.engine, "commit")
    def _on_commit(_conn):
        commits[0] += 1
    return commits


class Recorder:
    """queue_new_orders and publish_many, counted (and optionally failing)."""

    def __init__(self, runtime, fail_queue: Exception | None = None, before_failing=None) -> None:
        self.runtime, self.fail_queue, self.before_failing = runtime, fail_queue, before_failing
        self.queue_calls: list[list[tuple[str, str]]] = []
        self.publish_calls: list[list] = []
        bus_publish_many = runtime.bus.publish_many

        def publish_many(events):
            self.publish_calls.append(list(events))
            bus_publish_many(events)
        runtime.bus.publish_many = publish_many

    def queue_new_orders(self, pairs):
        self.queue_calls.append(list(pairs))
        if self.fail_queue is not None:
            if self.before_failing:
                self.before_failing(pairs)
            raise self.fail_queue
        self.runtime.queue_new_orders(pairs)


@pytest.fixture
def grouping(runtime):
    """The runtime's intake replaced by one that waits long enough for a whole burst to
    form one group (one writer, a 1 s window)."""
    def install(**recorder) -> Recorder:
        rec = Recorder(runtime, **recorder)
        runtime.intake.close()
        runtime.intake = Intake(runtime.store, rec.queue_new_orders, window_s=1.0, writers=1)
        return rec
    return install


def at_once(n: int, fn) -> list:
    """Run fn(i) on n threads released together; the results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def post(app, body) -> tuple[int, dict]:
    resp = app.test_client().post("/api/orders/execute", data=json.dumps(body),
                                  content_type="application/json")
    return resp.status_code, resp.get_json()


def test_concurrent_posts_share_one_transaction_one_queue_push_and_one_publish(app, runtime, grouping):
    rec = grouping()
    commits = count_commits(runtime)
    answers = at_once(GROUP, lambda i: post(app, {**SOL_USDC, "clientOrderId": f"bot-{i}"}))
    assert [status for status, _ in answers] == [201] * GROUP
    ids = [body["orderId"] for _, body in answers]
    assert len(set(ids)) == GROUP
    assert commits[0] == 1
    assert len(rec.queue_calls) == 1 and {oid for oid, _ in rec.queue_calls[0]} == set(ids)
    assert len(rec.publish_calls) == 1 and {e.order_id for e in rec.publish_calls[0]} == set(ids)
    assert count(runtime, orders) == GROUP and count(runtime, order_events) == GROUP


def test_each_request_gets_its_own_order_back(app, runtime, grouping):
    grouping()
    answers = at_once(GROUP, lambda i: post(app, {**SOL_USDC, "clientOrderId": f"bot-{i}"}))
    for i, (_, body) in enumerate(answers):
        snap = app.test_client().get(f"/api/orders/{body['orderId']}").get_json()
        assert snap["clientOrderId"] == f"bot-{i}" and snap["status"] == "pending"
        assert [e.seq for e in runtime.store.events(body["orderId"])] == [1]


def test_bad_input_in_a_burst_gets_its_400_and_the_good_orders_their_201(app, runtime, grouping):
    grouping()
    bodies = [SOL_USDC if i % 3 else {**SOL_USDC, "amountIn": "-1"} for i in range(GROUP)]
    answers = at_once(GROUP, lambda i: post(app, bodies[i]))
    assert [status for status, _ in answers] == [201 if i % 3 else 400 for i in range(GROUP)]
    assert count(runtime, orders) == GROUP - GROUP // 3


def test_an_order_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_stored(
        app, runtime, grouping):
    grouping()

    @sa.event.listens_for(runtime.engine, "before_cursor_execute")
    def _refuse_one(conn, cursor, statement, params, context, executemany):
        rows = params if executemany else [params]
        if statement.startswith("INSERT INTO orders") and any("refused" in map(str, r) for r in rows):
            raise sa.exc.IntegrityError(statement, params, sqlite3.IntegrityError("CHECK constraint failed"))

    bodies = [{**SOL_USDC, "clientOrderId": "refused" if i == 5 else f"bot-{i}"} for i in range(GROUP)]
    answers = at_once(GROUP, lambda i: post(app, bodies[i]))
    assert [status for status, _ in answers] == [503 if i == 5 else 201 for i in range(GROUP)]
    assert count(runtime, orders) == GROUP - 1 and count(runtime, order_events) == GROUP - 1


def test_a_bug_in_one_order_is_that_orders_error_alone(runtime, grouping):
    grouping()
    good = parse_order_request(SOL_USDC)
    bad = dataclasses.replace(good, amount_in="not a number")  # no valid body reads like this
    requests = [bad if i == 5 else good for i in range(GROUP)]
    results = at_once(GROUP, lambda i: runtime.intake.submit(requests[i]))
    assert isinstance(results[5], ValueError)
    assert all(r.event.status.value == "pending" for i, r in enumerate(results) if i != 5)
    assert count(runtime, orders) == GROUP - 1


def test_a_queue_failure_withdraws_the_group_and_answers_503_with_nothing_stored(app, runtime, grouping):
    rec = grouping(fail_queue=ConnectionError("queue is down"))
    answers = at_once(GROUP, lambda i: post(app, SOL_USDC))
    assert [status for status, _ in answers] == [503] * GROUP
    assert all(body["error"]["code"] == "SERVICE_UNAVAILABLE" for _, body in answers)
    assert len(rec.queue_calls) == 1 and len(rec.queue_calls[0]) == GROUP
    assert count(runtime, orders) == 0 and count(runtime, order_events) == 0
    assert rec.publish_calls == [] or rec.publish_calls == [[]]


def test_an_order_a_worker_took_before_the_queue_failed_is_live_and_answered_201(app, runtime, grouping):
    def a_worker_claims_the_first(pairs):
        order_id, token = pairs[0]
        assert runtime.store.claim(order_id, token, "worker-1") is not None
    grouping(fail_queue=ConnectionError("connection lost after the push"),
             before_failing=a_worker_claims_the_first)
    answers = at_once(4, lambda i: post(app, SOL_USDC))
    assert sorted(status for status, _ in answers) == [201, 503, 503, 503]
    assert count(runtime, orders) == 1
    live = next(body for status, body in answers if status == 201)
    assert runtime.store.get(live["orderId"]).work_owner == "worker-1"


def test_a_database_failure_answers_503_to_the_whole_group_with_nothing_stored(app, runtime, grouping):
    rec = grouping()

    @sa.event.listens_for(runtime.engine, "before_cursor_execute")
    def _events_table_is_gone(conn, cursor, statement, params, context, executemany):
        if statement.startswith("INSERT INTO order_events"):
            raise sa.exc.OperationalError(statement, params, sqlite3.OperationalError("disk I/O error"))

    answers = at_once(GROUP, lambda i: post(app, SOL_USDC))
    assert [status for status, _ in answers] == [503] * GROUP
    assert all(body["error"]["code"] == "SERVICE_UNAVAILABLE" for _, body in answers)
    assert count(runtime, orders) == 0 and count(runtime, order_events) == 0
    assert rec.queue_calls == []


def test_a_closed_intake_refuses_new_orders(runtime):
    runtime.intake.close()
    with pytest.raises(ServiceUnavailable):
        runtime.intake.submit(parse_order_request(SOL_USDC))
