"""The engine's HTTP API as the client sees it: JSON in and out over urllib, every failure one of
two exceptions (the server said no: `ApiError`; no answer at all: `Unreachable`)."""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping

TIMEOUT_S = 15


class ClientError(Exception):
    """Anything that stops a command before the order's outcome is known (exit status 2)."""


class Unreachable(ClientError):
    """No HTTP answer: nothing listening, a timeout, a connection cut mid-answer."""


@dataclass
class ApiError(ClientError):
    """An answer other than 2xx, with the engine's `{"error": {code, message, fields}}` when it sent one."""
    status: int
    code: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    retry_after: str | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]   # looked up without regard to case


class Api:
    """One engine at `base_url` (http:// or https://, an optional path prefix), called with `key`."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ClientError(f"--url must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[len("http"):]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def place_order(self, order: dict[str, Any], idempotency_key: str | None = None) -> Answer:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.call("POST", "/api/orders/execute", body=order, headers=headers)

    def orders_page(self, **query: str | int | None) -> dict[str, Any]:
        return self.call("GET", "/api/orders", query=query).body

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        """The decoded 2xx answer; raises ApiError for any other status, Unreachable for none."""
        url = self.base_url + path
        query = {k: v for k, v in (query or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, method=method, headers={
            "Accept": "application/json", **self.headers(), **(headers or {})})
        if body is not None:
            request.data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return Answer(response.status, _json(response.read()), response.headers)
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except urllib.error.URLError as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {_reason(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"no answer from {self.base_url}: {_reason(exc)}") from None


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        raw = exc.read()
    except (OSError, http.client.HTTPException):
        raw = b""
    error = _json(raw)
    error = error.get("error") if isinstance(error, dict) else None
    if not isinstance(error, dict):
        error = {"code": f"HTTP_{exc.code}", "message": exc.reason or "no message"}
    return ApiError(exc.code, str(error.get("code", f"HTTP_{exc.code}")), str(error.get("message", "")),
                    error.get("fields") or {}, exc.headers.get("Retry-After") if exc.headers else None)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        return None


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
