"""Every call out has a time limit, and a venue that hangs holds a bounded number of threads."""
from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from orderengine.calls import VenueCalls
from orderengine.errors import VenueTimeout
from orderengine.intake import submit_order
from orderengine.routing import QuoteFetcher
from orderengine.runtime import REDIS_SOCKET_TIMEOUT_S, Runtime
from orderengine.schemas import parse_order_request
from orderengine.tokens import SOL, USDC
from tests.fakes import FakeVenue, HungVenue, registry_of
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal


def test_a_call_that_hangs_times_out_and_further_calls_fail_at_once_instead_of_queueing():
    release = threading.Event()
    calls = VenueCalls("hung", threads=2, timeout_s=0.2)
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(VenueTimeout):
                calls.call(release.wait, 30)
            assert 0.15 < time.monotonic() - started < 2
        assert calls.busy == 2  # both threads are still inside the venue
        started = time.monotonic()
        with pytest.raises(VenueTimeout, match="still waiting"):
            calls.call(release.wait, 30)
        assert time.monotonic() - started < 0.1  # refused at once: nothing queued behind them
        assert len([t for t in threading.enumerate() if t.name.startswith("call-hung")]) == 2
        release.set()
        wait_for(lambda: calls.busy == 0, timeout=5)
        assert calls.call(lambda: "answer") == "answer"  # the venue is back: so are its threads
    finally:
        release.set()
        calls.close()


def test_quotes_from_a_hung_venue_time_out_on_a_bounded_number_of_threads():
    hung = HungVenue("hung", hang_quotes=True)
    fetcher = QuoteFetcher({"hung": hung, "alpha": FakeVenue("alpha")}, timeout_s=0.2, io_threads=2)
    try:
        for _ in range(5):
            outcomes = {o.venue: o for o in fetcher.fetch_now(SOL, USDC, Decimal("1"))}
            assert outcomes["hung"].error_code == "VENUE_TIMEOUT"
            assert outcomes["alpha"].quote is not None  # the others are not held up
        assert hung.most_stuck == 2
    finally:
        hung.release.set()
        fetcher.close()


def test_a_send_to_a_hung_venue_times_out_and_holds_no_more_threads_than_the_step_threads(settings):
    hung = HungVenue("hung")
    rt = Runtime(settings.replace(venue_call_timeout_ms=200, step_max_failures=100, worker_concurrency=2,
                                  retry_backoff_ms=20), registry=registry_of(hung))
    from orderengine.worker import EmbeddedWorker
    worker = EmbeddedWorker(rt)
    worker.start()
    try:
        ids = [submit_order(rt, parse_order_request({**SOL_USDC, "amountIn": str(n)})).order_id
               for n in (1, 2, 3)]
        # every call hangs: sends and lookups time out, the pool's two threads stay stuck and
        # further calls are refused at once, so the orders stay in `building` (maybe sent)
        wait_for(lambda: hung.most_stuck >= 2 and all(rt.store.get(i).status == "building" for i in ids),
                 timeout=10)
        time.sleep(1.0)  # several rounds of retries against the hung venue
        assert hung.most_stuck <= 2  # worker_concurrency threads at most, however many calls
        assert all(rt.store.get(i).status == "building" for i in ids)  # nothing ends without its word
        hung.release.set()  # the venue answers again: it never got the swaps, so they go out now
        for order_id in ids:  # the abandoned sends landed, or the venue never got them: sent now
            assert wait_terminal(rt, order_id, timeout=20).status == "confirmed"
        assert hung.fills == 3  # once each
    finally:
        hung.release.set()
        worker.stop()


def test_every_redis_client_the_engine_makes_has_socket_timeouts(settings):
    rt = Runtime(settings.replace(redis_url="redis://127.0.0.1:6399/0"), registry=registry_of(FakeVenue("a")))
    try:
        kwargs = rt.redis.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == REDIS_SOCKET_TIMEOUT_S and kwargs["socket_connect_timeout"]
        assert kwargs["health_check_interval"] > 0
        assert rt.huey.storage.conn.connection_pool is rt.redis.connection_pool  # Huey's pool
        assert rt.bus._client is rt.redis  # the bus (its pub/sub waits 1 s at a time, inside the limit)
    finally:
        rt.close()


def test_the_engine_on_fakeredis_still_runs_orders(redis_runtime):
    from orderengine.worker import EmbeddedWorker
    worker = EmbeddedWorker(redis_runtime)
    worker.start()
    try:
        order_id = submit_order(redis_runtime, parse_order_request(SOL_USDC)).order_id
        assert wait_terminal(redis_runtime, order_id).status == "confirmed"
    finally:
        worker.stop()
