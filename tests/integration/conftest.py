"""Integration fixtures: the engine in this process, on the real PostgreSQL and Redis.

Each test gets its own migrated PostgreSQL database and Redis db number (from
tests/conftest.py). A `Fleet` builds runtimes and embedded workers and takes them
all down at the end, so a test can run one worker or two sharing the same
services, as two hosts would.
"""
from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

from orderengine.app import create_app
from orderengine.config import Settings
from orderengine.migrate import upgrade
from orderengine.runtime import Runtime
from orderengine.worker import EmbeddedWorker
from tests.conftest import make_settings


class Fleet:
    """The runtimes and workers of one test, stopped and closed in teardown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtimes: list[Runtime] = []
        self._workers: list[EmbeddedWorker] = []
        self._closed: set[int] = set()

    def runtime(self, redis_client: Any = None, **overrides: Any) -> Runtime:
        settings = self.settings.replace(**overrides) if overrides else self.settings
        runtime = Runtime(settings, redis_client=redis_client)
        self._runtimes.append(runtime)
        return runtime

    def worker(self, runtime: Runtime | None = None) -> EmbeddedWorker:
        worker = EmbeddedWorker(runtime or self.runtime())
        worker.start()
        self._workers.append(worker)
        return worker

    def stop(self, worker: EmbeddedWorker) -> None:
        """Stop a worker gracefully (it hands its orders back), as SIGTERM would."""
        self._workers.remove(worker)
        self._closed.add(id(worker.runtime))
        worker.stop()  # also closes its runtime

    def close(self) -> None:
        # Workers stop in parallel: each waits up to a queue read timeout for its threads.
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self._workers))) as pool:
            list(pool.map(self.stop, list(self._workers)))
        for runtime in self._runtimes:
            if id(runtime) not in self._closed:
                runtime.close()
            if runtime.redis is not None:
                runtime.redis.connection_pool.disconnect()


@pytest.fixture
def migrated_pg_url(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


@pytest.fixture
def settings(migrated_pg_url: str, redis_url: str) -> Settings:
    """Fast settings on PostgreSQL + Redis, with a sweeper quick enough for a test to watch.

    The quote timeout is generous so that a busy machine slows a test down rather than
    turning a quote into VENUE_TIMEOUT and the happy path into a retry."""
    return make_settings(database_url=migrated_pg_url, redis_url=redis_url, quote_timeout_ms=5_000,
                         sweep_interval_ms=200, worker_dead_after_ms=2000)


@pytest.fixture
def fleet(settings: Settings):
    fleet = Fleet(settings)
    yield fleet
    fleet.close()


@pytest.fixture
def runtime(fleet: Fleet) -> Runtime:
    return fleet.runtime()


@pytest.fixture
def worker(fleet: Fleet, runtime: Runtime) -> EmbeddedWorker:
    """An embedded worker (Huey consumer threads + worker services) on `runtime`."""
    return fleet.worker(runtime)


@pytest.fixture
def app(settings: Settings, runtime: Runtime):
    return create_app(settings, runtime=runtime)


@pytest.fixture
def client(app):
    return app.test_client()
