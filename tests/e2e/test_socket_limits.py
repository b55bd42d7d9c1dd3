"""WebSockets per caller across gunicorn processes (close 4429), per process (close 1013), and
HTTP still answering while a process is full."""
from __future__ import annotations

import json
import time
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.harness import ORDER, clean_environ, free_port

pytestmark = pytest.mark.e2e


def open_stream(api, stack: ExitStack):
    """A stream socket the server is running (it answered a subscribe)."""
    ws = stack.enter_context(connect(f"{api.ws_url}/api/orders/stream", proxy=None, open_timeout=10))
    ws.send(json.dumps({"action": "subscribe", "all": True}))
    assert json.loads(ws.recv(timeout=10)) == {"type": "subscribed", "all": True}
    return ws


def refused(api) -> tuple[dict, int]:
    """Open one more socket: the one message it is sent, and its close code."""
    with connect(f"{api.ws_url}/api/orders/stream", proxy=None, open_timeout=10) as ws:
        message = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    return message, closed.value.rcvd.code


def test_a_caller_over_its_socket_limit_across_processes_is_refused_with_4429(harness, pg_url, private_redis_url):
    env = clean_environ(DATABASE_URL=pg_url, REDIS_URL=private_redis_url, PORT=free_port(), WEB_CONCURRENCY=2,
                        MAX_SOCKETS_PER_KEY=3)
    harness.migrate(env)
    api = harness.gunicorn(env)
    with ExitStack() as stack:
        held = [open_stream(api, stack) for _ in range(3)]
        message, code = refused(api)
        assert code == 4429 and message["error"]["code"] == "TOO_MANY_SOCKETS"
        held[0].close()
        deadline = time.monotonic() + 10
        while True:  # the server gives the slot back when it sees the close
            try:
                open_stream(api, stack)
                break
            except (AssertionError, ConnectionClosed):
                assert time.monotonic() < deadline, "the closed socket's slot was not given back"
                time.sleep(0.2)


def test_a_full_process_refuses_one_more_socket_with_1013_and_still_answers_http(harness, pg_url,
                                                                                  private_redis_url):
    env = clean_environ(DATABASE_URL=pg_url, REDIS_URL=private_redis_url, PORT=free_port(), WEB_CONCURRENCY=1,
                        MAX_SOCKETS_PER_PROCESS=5, MAX_SOCKETS_PER_KEY=100, WEB_THREADS=4)
    harness.migrate(env)
    api = harness.gunicorn(env)
    with ExitStack() as stack:
        for _ in range(5):
            open_stream(api, stack)
        message, code = refused(api)
        assert code == 1013 and message["error"]["code"] == "SERVER_BUSY"
        started = time.monotonic()
        assert api.get("/health", timeout=1).status_code == 200
        assert api.http.post(api.base_url + "/api/orders/execute", json=ORDER, timeout=1).status_code == 201
        assert time.monotonic() - started < 2
