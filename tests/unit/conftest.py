"""Unit fixtures: the engine on a SQLite file, in-process queue and bus, fake venues."""
from __future__ import annotations

import time

import fakeredis
import pytest

from orderengine.app import create_app
from orderengine.migrate import upgrade
from orderengine.runtime import Runtime
from orderengine.worker import EmbeddedWorker
from tests.conftest import make_settings
from tests.fakes import FakeVenue, registry_of

SOL_USDC = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}


@pytest.fixture
def settings(sqlite_url):
    upgrade(sqlite_url)
    return make_settings(database_url=sqlite_url)


@pytest.fixture
def chain_url(sqlite_url) -> str:
    """A SQLite file migrated to the newest schema, the simulated chain's tables included
    (the chain does not create them itself: `orderengine migrate` does)."""
    upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
def venues():
    return [FakeVenue("alpha", price="150"), FakeVenue("beta", price="149")]


@pytest.fixture
def runtime(settings, venues):
    rt = Runtime(settings, registry=registry_of(*venues))
    yield rt
    rt.close()


@pytest.fixture
def redis_runtime(settings, venues):
    """The engine in its Redis mode, on fakeredis."""
    rt = Runtime(settings.replace(redis_url="redis://fake"), redis_client=fakeredis.FakeRedis(),
                 registry=registry_of(*venues))
    yield rt
    rt.close()


@pytest.fixture
def worker(runtime):
    w = EmbeddedWorker(runtime)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def start_engine(settings):
    """Start the engine in-process on `venues` with some settings changed; stopped after the test."""
    started = []

    def start(*venues, **changes) -> Runtime:
        rt = Runtime(settings.replace(**changes), registry=registry_of(*venues))
        worker = EmbeddedWorker(rt)
        worker.start()
        started.append(worker)
        return rt

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def app(runtime):
    return create_app(runtime.settings, runtime=runtime)


@pytest.fixture
def client(app):
    return app.test_client()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_terminal(runtime, order_id: str, timeout: float = 30.0):
    return wait_for(lambda: (lambda r: r if r.status in ("confirmed", "failed", "cancelled") else None)(
        runtime.store.get(order_id)), timeout)
