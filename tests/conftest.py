"""Shared fixtures: settings on a throwaway database, apps, clients, real services.

Unit tests use SQLite files under tmp_path and fakeredis. Integration and
end-to-end tests use the real PostgreSQL and Redis on 127.0.0.1: each test gets
its own PostgreSQL database and its own Redis db number. Without the services
those tests skip, except with CI=true, where they fail.
"""
from __future__ import annotations

import itertools
import os
import time
import uuid

import pytest

from orderengine.config import Settings

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_redis_dbs = itertools.cycle(range(1, 16))


def _service_missing(what: str, exc: Exception):
    message = f"{what} is not reachable: {exc}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: integration tests must run)")
    pytest.skip(message)


def make_settings(**overrides) -> Settings:
    """Fast, deterministic defaults for tests; override what a test is about."""
    base = dict(mock_quote_latency_ms=0, mock_exec_latency_ms=0, mock_fail_rate=0.0,
                retry_backoff_ms=10, sweep_interval_ms=200, worker_dead_after_ms=2000,
                worker_concurrency=4)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/orderengine.db"


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    name = f"oe_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        _service_missing("PostgreSQL", exc)
    yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url():
    """A Redis db number of its own for this test, flushed before and after.

    The number is reserved in db 0 (SET NX with a lease), so two pytest processes on one
    Redis (two developers, CI beside a developer) never share a db."""
    import redis

    admin = redis.Redis.from_url(f"{REDIS_HOST_URL}/0", socket_connect_timeout=2)
    number, lease = None, uuid.uuid4().hex
    try:
        for _ in range(600):
            candidate = next(_redis_dbs)
            if admin.set(f"orderengine-tests:db:{candidate}", lease, nx=True, ex=900):
                number = candidate
                break
            time.sleep(0.1)
    except Exception as exc:
        _service_missing("Redis", exc)
    assert number is not None, "no free Redis db number for this test"
    url = f"{REDIS_HOST_URL}/{number}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
    if admin.get(f"orderengine-tests:db:{number}") == lease.encode():
        admin.delete(f"orderengine-tests:db:{number}")
    admin.close()
