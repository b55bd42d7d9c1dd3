"""Idempotency-Key under PostgreSQL's real concurrency: any number of requests with one key,
through two API processes' intakes at once, make one order; the unique constraint decides."""
from __future__ import annotations

import threading

import pytest

from orderengine.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from orderengine.intake import submit_order
from tests.integration.watching import order_request

pytestmark = pytest.mark.integration


def test_twenty_concurrent_requests_with_one_key_make_one_order(fleet):
    apis = [fleet.runtime(), fleet.runtime()]  # two API processes
    barrier, answers, lock = threading.Barrier(20), [], threading.Lock()

    def send(i: int) -> None:
        barrier.wait()
        try:
            answer: object = submit_order(apis[i % 2], order_request(), "one-key")
        except IdempotencyKeyInUse as exc:
            answer = exc
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    accepted = [a for a in answers if not isinstance(a, Exception)]
    with apis[0].engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT id FROM orders").scalars().all()
    assert len(answers) == 20 and len(stored) == 1
    assert {a.order_id for a in accepted} == set(stored)
    assert sum(not a.replayed for a in accepted) == 1  # exactly one request made it


def test_the_same_key_with_another_body_is_refused_across_processes(fleet):
    first, second = fleet.runtime(), fleet.runtime()
    made = submit_order(first, order_request(amountIn="1"), "body-key")
    with pytest.raises(IdempotencyKeyReused):
        submit_order(second, order_request(amountIn="2"), "body-key")
    assert submit_order(second, order_request(amountIn="1"), "body-key").order_id == made.order_id
