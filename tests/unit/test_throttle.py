import fakeredis

from orderengine.throttle import MemoryThrottle, NoThrottle, RedisThrottle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_no_limit_never_waits():
    assert NoThrottle().acquire() == 0


def test_memory_throttle_admits_n_per_minute_then_says_how_long_to_wait():
    clock = Clock()
    t = MemoryThrottle(2, clock=clock)
    assert [t.acquire(), t.acquire()] == [0, 0]
    clock.now += 10
    assert t.acquire() == 50  # the first start leaves the window at +60 s
    clock.now += 50
    assert t.acquire() == 0


def test_redis_throttle_is_shared_by_every_worker():
    clock, redis = Clock(), fakeredis.FakeRedis()
    a, b = RedisThrottle(redis, 2, clock=clock), RedisThrottle(redis, 2, clock=clock)
    assert a.acquire() == 0 and b.acquire() == 0
    clock.now += 1
    assert 58 < a.acquire() <= 59 and 58 < b.acquire() <= 59
    clock.now += 60
    assert b.acquire() == 0
