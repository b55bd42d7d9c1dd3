"""MAX_ORDERS_PER_MINUTE is one limit for every worker: its sliding window lives in Redis."""
from __future__ import annotations

import threading

import pytest
import redis

from orderengine.throttle import WINDOW_S, RedisThrottle

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_clients(redis_url):
    made: list[redis.Redis] = []

    def make() -> redis.Redis:
        made.append(redis.Redis.from_url(redis_url))
        return made[-1]
    yield make
    for client in made:
        client.close()


def test_the_fourth_start_within_a_minute_is_told_how_long_to_wait(redis_clients):
    throttle = RedisThrottle(redis_clients(), per_minute=3)
    assert [throttle.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    delay = throttle.acquire()
    assert 0 < delay <= WINDOW_S
    assert delay > WINDOW_S - 5  # the oldest start was just now: nearly the whole window


def test_two_workers_share_one_limit(redis_clients):
    first, second = RedisThrottle(redis_clients(), 3), RedisThrottle(redis_clients(), 3)
    assert first.acquire() == 0.0 and first.acquire() == 0.0
    assert second.acquire() == 0.0
    assert 0 < second.acquire() <= WINDOW_S
    assert 0 < first.acquire() <= WINDOW_S


def test_racing_workers_never_start_more_than_the_limit(redis_clients):
    throttles = [RedisThrottle(redis_clients(), 3) for _ in range(12)]
    barrier = threading.Barrier(len(throttles))
    delays: list[float] = []
    lock = threading.Lock()

    def start(throttle):
        barrier.wait()
        delay = throttle.acquire()
        with lock:
            delays.append(delay)

    threads = [threading.Thread(target=start, args=(t,)) for t in throttles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(delays) == 12
    assert delays.count(0.0) == 3
    assert all(d > 0 for d in delays if d), delays  # the bound: see the clock test below


def test_the_delay_never_exceeds_the_window_when_workers_clocks_differ(redis_clients):
    # Worker B read its clock half a second before worker A stamped its starts.
    first = RedisThrottle(redis_clients(), 3, clock=lambda: 1_000_000.5)
    second = RedisThrottle(redis_clients(), 3, clock=lambda: 1_000_000.0)
    assert [first.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert 0 < second.acquire() <= WINDOW_S
