"""One order's events over `GET /api/orders/execute?orderId=…&since=N` (SPEC §4).

The server sends every event with `seq > N` and closes with 1000 after the terminal one. When the
socket drops before that, we connect again with `since=<last seq seen>`, so no event is shown twice
or skipped; a refusal (4400, 4401, 4404, 4429) would be answered the same again and is not retried.
"""
from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator, Union

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import connect

from orderengine.client.http import Api, ClientError, Unreachable

TERMINAL = frozenset({"confirmed", "failed", "cancelled"})
#: close codes the server would send again on a new connection: give up at once
REFUSALS = frozenset({4400, 4401, 4403, 4404, 4429})
CLOSE_FINAL = 1000   # the server sent every event after `since` and the order is final
#: waits before the reconnects after a drop; the count resets whenever a new event arrives
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
OPEN_TIMEOUT_S = 10


@dataclass(frozen=True)
class Event:
    """An event as received: the parsed object and the text it came in."""
    data: dict[str, Any]
    raw: str

    @property
    def status(self) -> str:
        return str(self.data.get("status"))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Reconnecting:
    """The socket dropped; the next connection asks for the events after `since` in `delay_s`."""
    since: int
    attempt: int
    of: int
    delay_s: float
    why: str


class SocketRefused(ClientError):
    """The server closed the socket with a refusal code and (usually) said why."""

    def __init__(self, close_code: int | None, error: dict[str, Any] | None) -> None:
        error = error or {}
        self.close_code = close_code
        self.code = str(error.get("code") or f"CLOSED_{close_code}")
        self.message = str(error.get("message") or "the server closed the socket")
        super().__init__(f"{self.code}: {self.message} (WebSocket closed with {close_code})")

    @property
    def unauthorized(self) -> bool:
        return self.close_code == 4401 or self.code == "UNAUTHORIZED"


class StreamLost(ClientError):
    """The socket dropped before the order's end and did not come back."""


def follow(api: Api, order_id: str, since: int = 0,
           backoff: tuple[float, ...] | None = None) -> Iterator[Union[Event, Reconnecting]]:
    """Yield the order's events with seq > `since`, in order, each once, up to and including the
    terminal one; yield a `Reconnecting` before each new connection after a drop. Ends without a
    terminal event when the order had already ended at or before `since` (the server closes 1000
    with nothing to send)."""
    backoff = BACKOFF_S if backoff is None else backoff
    last = since
    failures = 0
    connected_once = False
    while True:
        error: dict[str, Any] | None = None
        try:
            with connect(_url(api, order_id, last), additional_headers=api.headers(),
                         open_timeout=OPEN_TIMEOUT_S, close_timeout=5) as ws:
                connected_once = True
                while True:
                    text, message = _parse(ws.recv())
                    if message is None:
                        continue
                    if "seq" not in message:
                        error = message.get("error") if isinstance(message.get("error"), dict) else error
                        continue
                    if not isinstance(message["seq"], int) or message["seq"] <= last:
                        continue   # already shown (a replay overlapping what we had)
                    last, failures = message["seq"], 0
                    event = Event(message, text)
                    yield event
                    if event.terminal:
                        return
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            if code in REFUSALS:
                raise SocketRefused(code, error) from None
            if code == CLOSE_FINAL:
                return
            why = f"the socket closed ({code or 'no close frame'}) before the order ended"
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500:
                raise SocketRefused(4401 if status == 401 else status, error or {
                    "code": f"HTTP_{status}", "message": f"the server refused the WebSocket with {status}"})
            why = f"the server answered the WebSocket with {status}"
        except InvalidURI as exc:
            raise ClientError(f"not a WebSocket address: {exc}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if not connected_once:
                raise Unreachable(f"cannot open the WebSocket at {api.ws_url}: {_reason(exc)}") from None
            why = f"cannot reconnect: {_reason(exc)}"
        failures += 1
        if failures > len(backoff):
            raise StreamLost(f"{why}; gave up after {len(backoff)} reconnects "
                             f"(last event seen: seq {last})")
        delay = backoff[failures - 1]
        yield Reconnecting(last, failures, len(backoff), delay, why)
        time.sleep(delay)


def _url(api: Api, order_id: str, since: int) -> str:
    query = {"orderId": order_id}
    if since:
        query["since"] = str(since)
    return f"{api.ws_url}/api/orders/execute?{urllib.parse.urlencode(query)}"


def _parse(raw: str | bytes) -> tuple[str, dict[str, Any] | None]:
    """(the message's text, the JSON object it holds, or None when it holds none)."""
    text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw).strip()
    try:
        message = json.loads(text)
    except ValueError:
        return text, None
    return text, message if isinstance(message, dict) else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
