"""The limits shared by every API process through the real Redis, and the queue cap on PostgreSQL."""
from __future__ import annotations

import concurrent.futures
import time

import pytest

from orderengine.store import count_unsubmitted
from orderengine.errors import Overloaded, RateLimited, TooManySockets
from orderengine.intake import submit_order
from tests.integration.watching import order_request

pytestmark = pytest.mark.integration


def test_two_processes_share_one_callers_rate_limit_exactly(fleet):
    """50 threads on two runtimes (two processes' worth of clients) race for 20 places."""
    one, two = fleet.runtime(rate_limit_per_minute=20), fleet.runtime(rate_limit_per_minute=20)

    def attempt(i: int) -> str:
        try:
            (one if i % 2 else two).rate_limit.check("key:alice")
            return "in"
        except RateLimited as exc:
            assert 1 <= exc.retry_after_s <= 60
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(attempt, range(50)))
    assert outcomes.count("in") == 20
    one.rate_limit.check("key:bob")  # another caller is not affected


def test_the_rate_limit_costs_one_round_trip_per_order(fleet):
    limit = fleet.runtime(rate_limit_per_minute=100_000).rate_limit
    limit.check("warm-up")
    started = time.perf_counter()
    for _ in range(500):
        limit.check("key:timed")
    per_call_ms = (time.perf_counter() - started) * 1000 / 500
    print(f"rate limit check on Redis: {per_call_ms:.3f} ms per call")
    assert per_call_ms < 5


def test_the_queue_cap_counts_accepted_orders_not_yet_submitted(fleet):
    api = fleet.runtime(max_queued_orders=3)
    for _ in range(3):
        submit_order(api, order_request())
    assert count_unsubmitted(api.engine, 100) == 3
    api.queue_cap._read_at = float("-inf")  # as if the refresh interval had passed
    with pytest.raises(Overloaded):
        submit_order(api, order_request())
    assert count_unsubmitted(api.engine, 100) == 3


def test_sockets_of_one_caller_are_counted_across_processes(fleet):
    one, two = fleet.runtime(max_sockets_per_key=2), fleet.runtime(max_sockets_per_key=2)
    first = one.socket_slots.open("key:alice")
    two.socket_slots.open("key:alice")
    with pytest.raises(TooManySockets):
        one.socket_slots.open("key:alice")
    one.socket_slots.close(first)
    two.socket_slots.open("key:alice")


def test_a_group_is_counted_in_one_pipelined_round_trip_in_order(fleet):
    limit = fleet.runtime(rate_limit_per_minute=5).rate_limit
    limit.check("key:carol")
    outcomes = limit.check_many(["key:carol"] * 6 + ["key:dave"])
    assert [o is None for o in outcomes] == [True] * 4 + [False] * 2 + [True]
    assert all(1 <= o.retry_after_s <= 60 for o in outcomes[4:6])
    with pytest.raises(RateLimited):
        limit.check("key:carol")


def test_concurrent_posts_of_one_caller_get_exactly_the_limit(fleet, settings):
    from orderengine.app import create_app
    from tests.integration.watching import order_body

    runtime = fleet.runtime(rate_limit_per_minute=25)
    app = create_app(runtime.settings, runtime=runtime)

    def post(_):
        return app.test_client().post("/api/orders/execute", json=order_body()).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(post, range(60)))
    assert codes.count(201) == 25 and codes.count(429) == 35
    assert count_unsubmitted(runtime.engine, 1000) == 25
