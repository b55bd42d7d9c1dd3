"""The client's commands against a scripted WebSocket server and a dead address: what they print,
and the exit status a script can rely on."""
from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse
from typing import Iterator

import pytest
from click.testing import CliRunner
from websockets.sync.server import serve

from orderengine.cli import main
from orderengine.client.commands import exit_status

ORDER_ID = "0b8f6f3e-8c55-4a4e-9a53-6f0f7c0f1a11"
STATUSES = ["pending", "routing", "building", "submitted", "confirmed"]


def event_text(seq: int, status: str | None = None) -> str:
    """An event as the server writes it (deliberately with its own spacing: --json must keep it)."""
    status = status or STATUSES[seq - 1]
    return json.dumps({"orderId": ORDER_ID, "seq": seq, "status": status, "at": "2026-11-26T10:00:00.000Z",
                       "attempt": 1, "data": {}}, separators=(", ", ": "))


class ScriptedSocket:
    """A WebSocket server that plays one script per connection: messages to send, then how to end
    ("drop" cuts the TCP connection with no close frame; a number closes with that code)."""

    def __init__(self, scripts: list[tuple[list[str], int | str]]) -> None:
        self.scripts = list(scripts)
        self.requests: list[dict[str, list[str]]] = []
        self.headers: list[dict[str, str]] = []
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handle(self, ws) -> None:
        self.requests.append(urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query))
        self.headers.append({"Authorization": ws.request.headers.get("Authorization")})
        messages, end = self.scripts.pop(0)
        for message in messages:
            ws.send(message)
        if end == "drop":
            ws.socket.shutdown(socket.SHUT_RDWR)
        else:
            ws.close(code=int(end))

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scripted() -> Iterator:
    servers: list[ScriptedSocket] = []

    def start(*scripts: tuple[list[str], int | str]) -> ScriptedSocket:
        servers.append(ScriptedSocket(list(scripts)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"   # closed again: nothing listens there


@pytest.mark.parametrize("status, code", [("confirmed", 0), ("failed", 1), ("cancelled", 1)])
def test_exit_status_is_0_for_a_fill_and_1_for_an_order_that_ended_without_one(status, code):
    assert exit_status(status) == code


def test_watch_shows_one_line_per_event_in_order_and_exits_0_when_confirmed(scripted):
    server = scripted(([event_text(s) for s in range(1, 6)], 1000))

    result = run("watch", ORDER_ID, "--url", server.url)

    assert result.exit_code == 0, result.output
    statuses = [line.split()[2] for line in result.stdout.splitlines()]
    assert statuses == STATUSES
    assert server.requests == [{"orderId": [ORDER_ID]}]


def test_watch_json_prints_each_event_exactly_as_received(scripted):
    sent = [event_text(s) for s in range(1, 6)]
    server = scripted((sent, 1000))

    result = run("watch", ORDER_ID, "--url", server.url, "--json")

    assert result.exit_code == 0
    assert result.stdout.splitlines() == sent
    assert "\x1b[" not in result.stdout


def test_watch_exits_1_when_the_order_failed(scripted):
    server = scripted(([event_text(1), event_text(2, "failed")], 1000))

    assert run("watch", ORDER_ID, "--url", server.url).exit_code == 1


@pytest.mark.parametrize("end", ["drop", 1011, 1001])
def test_a_dropped_socket_is_reopened_after_the_last_seq_and_no_event_is_shown_twice(scripted, end):
    # the second connection also sends seq 2 again: a server may overlap; the client must not repeat it
    server = scripted(([event_text(1), event_text(2)], end),
                      ([event_text(2), event_text(3), event_text(4), event_text(5)], 1000))

    result = run("watch", ORDER_ID, "--url", server.url, "--json")

    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2, 3, 4, 5]
    assert server.requests == [{"orderId": [ORDER_ID]}, {"orderId": [ORDER_ID], "since": ["2"]}]
    assert "reconnecting" in result.stderr


def test_a_socket_that_never_comes_back_exits_2_and_says_how_to_follow_the_order_later(scripted, monkeypatch):
    monkeypatch.setattr("orderengine.client.follow.BACKOFF_S", (0.01, 0.01))
    # two tries after each drop; an event that arrives earns two tries again
    server = scripted(([event_text(1), event_text(2)], "drop"), ([event_text(3)], "drop"), ([], "drop"),
                      ([], "drop"))

    result = run("watch", ORDER_ID, "--url", server.url)

    assert result.exit_code == 2
    assert [line.split()[2] for line in result.stdout.splitlines()] == ["pending", "routing", "building"]
    assert f"orderengine watch {ORDER_ID} --since 3" in result.stderr
    assert [r.get("since") for r in server.requests] == [None, ["2"], ["3"], ["3"]]


def test_watch_since_asks_only_for_the_later_events(scripted):
    server = scripted(([event_text(4), event_text(5)], 1000))

    result = run("watch", ORDER_ID, "--since", "3", "--url", server.url)

    assert result.exit_code == 0
    assert server.requests == [{"orderId": [ORDER_ID], "since": ["3"]}]


def test_an_unknown_order_exits_2_with_the_servers_message(scripted):
    refusal = json.dumps({"error": {"code": "ORDER_NOT_FOUND", "message": "No order has the id x."}})
    server = scripted(([refusal], 4404))

    result = run("watch", ORDER_ID, "--url", server.url)

    assert result.exit_code == 2
    assert "ORDER_NOT_FOUND: No order has the id x." in result.stderr
    assert len(server.requests) == 1   # a refusal is not retried


def test_a_socket_refused_for_want_of_a_key_hints_at_key(scripted):
    server = scripted(([json.dumps({"error": {"code": "UNAUTHORIZED", "message": "An API key is needed."}})],
                       4401))

    result = run("watch", ORDER_ID, "--url", server.url)

    assert result.exit_code == 2
    assert "--key" in result.stderr and "ORDERENGINE_KEY" in result.stderr


def test_the_key_is_sent_as_a_bearer_header_on_the_socket(scripted, monkeypatch):
    server = scripted(([event_text(5)], 1000))
    monkeypatch.setenv("ORDERENGINE_KEY", "k-123")

    assert run("watch", ORDER_ID, "--since", "4", "--url", server.url).exit_code == 0
    assert server.headers[0]["Authorization"] == "Bearer k-123"


def test_the_url_comes_from_ORDERENGINE_URL_when_not_given(scripted, monkeypatch):
    server = scripted(([event_text(5)], 1000))
    monkeypatch.setenv("ORDERENGINE_URL", server.url)

    assert run("watch", ORDER_ID, "--since", "4").exit_code == 0
    assert len(server.requests) == 1


@pytest.mark.parametrize("argv", [
    ["order", "SOL", "USDC", "1"], ["watch", ORDER_ID], ["orders"], ["orders", "--all"]])
def test_a_url_with_nothing_listening_exits_2_and_says_it_cannot_reach_it(argv):
    url = dead_url()

    result = run(*argv, "--url", url)

    assert result.exit_code == 2
    assert f"cannot reach {url}" in result.stderr or f"cannot open the WebSocket at ws" in result.stderr
    assert "Traceback" not in result.output


def test_a_url_that_is_not_http_is_a_usage_error():
    result = run("orders", "--url", "ftp://example")

    assert result.exit_code == 2
    assert "http://" in result.stderr


def test_a_slippage_that_is_not_a_number_is_a_usage_error():
    result = run("order", "SOL", "USDC", "1", "--slippage-bps", "x", "--url", dead_url())

    assert result.exit_code == 2


class RefusingHttp:
    """An HTTP server that answers every request with one status and the engine's error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.seen: list[dict[str, str | None]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                             "idempotency-key": self.headers.get("Idempotency-Key")})
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def refusing():
    servers: list[RefusingHttp] = []

    def start(*args, **kwargs) -> RefusingHttp:
        servers.append(RefusingHttp(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


def test_a_401_exits_2_and_hints_at_key_and_ORDERENGINE_KEY(refusing):
    server = refusing(401, "UNAUTHORIZED", "A valid API key is needed.")

    result = run("order", "SOL", "USDC", "1", "--url", server.url, "--key", "wrong",
                 "--idempotency-key", "k1")

    assert result.exit_code == 2
    assert "401 UNAUTHORIZED: A valid API key is needed." in result.stderr
    assert "--key" in result.stderr and "ORDERENGINE_KEY" in result.stderr
    assert server.seen == [{"path": "/api/orders/execute", "authorization": "Bearer wrong",
                            "idempotency-key": "k1"}]


def test_an_overloaded_server_exits_2_and_passes_on_when_to_try_again(refusing):
    server = refusing(503, "OVERLOADED", "Too many orders are queued.", {"Retry-After": "7"})

    result = run("order", "SOL", "USDC", "1", "--url", server.url, "--json")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "OVERLOADED" in result.stderr and "7 s" in result.stderr


def test_a_socket_refused_at_the_handshake_with_401_hints_at_key():
    from websockets.http11 import Response
    from websockets.datastructures import Headers

    def refuse(connection, request):
        return Response(401, "Unauthorized", Headers(), b"")

    with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        result = run("watch", ORDER_ID, "--url", url)
        server.shutdown()

    assert result.exit_code == 2
    assert "401" in result.stderr and "ORDERENGINE_KEY" in result.stderr
