"""Fixtures of the end-to-end tests; the process machinery is in harness.py."""
from __future__ import annotations

import pytest

from tests.e2e.harness import IN_CI, REDIS_SERVER, Harness, free_port


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report carries the tail of every log of the processes it used."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if hasattr(value, "log_sections"):
                for title, text in value.log_sections():
                    report.sections.append((f"log of {title}", text))


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def redis_server_binary():
    if REDIS_SERVER is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: end-to-end tests must run)")
        pytest.skip(message)
    return REDIS_SERVER


@pytest.fixture
def private_redis_url(request, harness):
    """A Redis of this test's own: a redis-server on a free port when one is installed.

    The shared `redis_url` fixture hands out db numbers 1..15 in the same order in every
    pytest process, so two runs at once (two developers, or the integration suite next to
    this one) share a db: one's FLUSHDB or worker takes the other's queued steps. A private
    server cannot be disturbed. Without redis-server we fall back to `redis_url`.
    """
    if REDIS_SERVER is None:
        return request.getfixturevalue("redis_url")
    port = free_port()
    harness.redis_server(port)
    return f"redis://127.0.0.1:{port}/0"
