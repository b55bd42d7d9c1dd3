"""Idempotency-Key on POST /api/orders/execute: a retry gets the first answer and creates nothing."""
import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from orderengine.intake import ANYONE, KEY_IN_PROGRESS_GRACE_S, IdempotencyKey
from orderengine.models import idempotency_keys, orders
from orderengine.schemas import parse_order_request
from orderengine.store import new_token
from tests.unit.conftest import SOL_USDC
from tests.unit.test_api import order_count, post


def post_with_key(client, key, body=SOL_USDC):
    return post(client, body, headers={"Idempotency-Key": key})


def test_the_same_key_and_body_get_the_first_answer_again_and_create_nothing(client, runtime):
    first = post_with_key(client, "k-1")
    queued = runtime.huey.pending_count()
    again = post_with_key(client, "k-1")
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert order_count(runtime) == 1 and runtime.huey.pending_count() == queued


def test_the_same_key_with_another_body_is_a_422_and_changes_nothing(client, runtime):
    post_with_key(client, "k-2")
    response = post_with_key(client, "k-2", {**SOL_USDC, "amountIn": "2"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert order_count(runtime) == 1


def test_the_same_order_written_differently_is_the_same_request(client, runtime):
    first = post_with_key(client, "k-3", {**SOL_USDC, "amountIn": 1})
    again = post_with_key(client, "k-3", {**SOL_USDC, "amountIn": "1.0", "tokenIn": "sol"})
    assert again.status_code == 201 and again.get_json() == first.get_json()


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "tab\there"])
def test_a_malformed_key_is_a_400_and_nothing_is_stored(client, runtime, key):
    response = post(client, SOL_USDC, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["error"]["fields"]
    assert order_count(runtime) == 0


def test_keys_of_different_values_make_different_orders(client, runtime):
    a, b = post_with_key(client, "k-a"), post_with_key(client, "k-b")
    assert a.get_json()["orderId"] != b.get_json()["orderId"] and order_count(runtime) == 2


def test_concurrent_requests_with_one_key_make_one_order(client, runtime, app):
    answers, barrier = [], threading.Barrier(12)

    def send():
        barrier.wait()
        answers.append(post_with_key(app.test_client(), "k-race"))

    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert order_count(runtime) == 1
    ok = [a for a in answers if a.status_code == 201]
    assert {a.get_json()["orderId"] for a in ok} == {runtime_order_id(runtime)}
    assert all(a.status_code in (201, 409) for a in answers) and len(answers) == 12


def runtime_order_id(runtime) -> str:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(orders.c.id)).scalar_one()


def test_a_retry_after_a_commit_the_client_never_heard_of_replays_it(client, runtime):
    """The connection died during COMMIT: the order and its key were stored together."""
    request = parse_order_request(SOL_USDC)
    order_id = "11111111-1111-4111-8111-111111111111"
    runtime.store.create_many([(order_id, request, new_token())],
                              [IdempotencyKey.of(ANYONE, "k-lost", request)])
    early = post_with_key(client, "k-lost")  # its request may still be answering: wait
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
    with runtime.engine.begin() as conn:  # the client retries after its timeout
        conn.execute(sa.update(idempotency_keys).values(
            created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=KEY_IN_PROGRESS_GRACE_S + 1)))
    retry = post_with_key(client, "k-lost")
    assert retry.status_code == 201 and retry.get_json()["orderId"] == order_id
    assert retry.headers["Idempotent-Replayed"] == "true" and order_count(runtime) == 1


def test_an_expired_key_is_forgotten(client, runtime):
    first = post_with_key(client, "k-old")
    with runtime.engine.begin() as conn:
        conn.execute(sa.update(idempotency_keys).values(expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    again = post_with_key(client, "k-old")
    assert again.status_code == 201 and again.get_json()["orderId"] != first.get_json()["orderId"]
    assert "Idempotent-Replayed" not in again.headers
    assert runtime.store.purge_idempotency_keys() == 0  # the new order took the key over


def test_purging_removes_keys_past_their_ttl(client, runtime):
    post_with_key(client, "k-purge")
    with runtime.engine.begin() as conn:
        conn.execute(sa.update(idempotency_keys).values(expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    assert runtime.store.purge_idempotency_keys() == 1
    assert runtime.store.idempotent_answer(ANYONE, "k-purge") is None


def test_a_withdrawn_order_releases_its_key(client, runtime, monkeypatch):
    def queue_down(pairs):
        raise ConnectionError("queue down")
    monkeypatch.setattr(runtime.intake, "queue_new_orders", queue_down)
    assert post_with_key(client, "k-withdrawn").status_code == 503
    assert runtime.store.idempotent_answer(ANYONE, "k-withdrawn") is None and order_count(runtime) == 0
