"""The OpenAPI 3 document of the HTTP API, built with apispec from marshmallow schemas.

The request body of POST /api/orders/execute is the schema that validates it
(schemas.OrderRequestSchema); query, path and header parameters take their
limits from the constants the parse_* functions check. Answers are described
by the documentation-only schemas of shapes.py. Every operation is listed in
_operations() by its path and method, and only those the app serves are
written out, so the document never names an address the server does not
answer (a test checks the converse: every address the app serves is in it).
"""
from __future__ import annotations

import re
from typing import Any, Iterator

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from orderengine import errors, schemas
from orderengine.api.docs import shapes
from orderengine.api.errors import HTTP_CODES
from orderengine.tokens import TOKENS

OPENAPI_VERSION = "3.0.3"
TITLE = "orderengine"
BEARER = "bearerAuth"

# --- the request schemas' own fields, described ------------------------------------------

_AMOUNT_IN = {
    "anyOf": [
        {"type": "string", "pattern": r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)$",
         "description": "A plain decimal string, no exponent: \"1.5\"."},
        {"type": "number", "exclusiveMinimum": True, "minimum": 0,
         "description": "A JSON number, read with its exact digits (never through a float)."},
    ],
    "description": "Amount of tokenIn to sell: > 0, at most the token's decimals (SOL 9, USDC 6, USDT 6), "
                   "at most 2^64−1 base units. Booleans, NaN, Infinity and exponents in strings are "
                   "rejected.",
    "example": "1.5",
}


def _describe_custom_fields(self, field, ret: dict, **kwargs) -> dict[str, Any]:
    """apispec attribute function: what schemas.py's own fields and validators accept."""
    if isinstance(field, schemas.AmountField):
        return dict(_AMOUNT_IN)
    if isinstance(field, schemas.TokenField):
        # The enum is the canonical spellings; the server also takes a symbol in any case.
        return {"type": "string", "enum": [name for t in TOKENS for name in (t.symbol, t.mint)],
                "example": "USDC" if field.data_key == "tokenOut" else "SOL",
                "description": "A token by symbol (the server accepts any case, e.g. `sol`) or by mint "
                               "address."}
    if schemas._order_type in getattr(field, "validators", ()):
        return {"enum": list(schemas.ORDER_TYPES)}
    return {}


# --- parameters and answers ---------------------------------------------------------------

ORDER_ID = {"name": "orderId", "in": "path", "required": True, "description": "The order's id (a UUID).",
            "schema": {"type": "string", "format": "uuid", "pattern": f"^{schemas._UUID.pattern}$"}}
SINCE = {"name": "since", "in": "query", "required": False,
         "description": "The last `seq` the client has seen: only events after it (default 0: all).",
         "schema": {"type": "integer", "minimum": 0, "maximum": 10 ** 18 - 1, "default": 0}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes a retry safe: the same key with the same order answers the first answer again "
                   "(with `Idempotent-Replayed: true`) and creates nothing; with a different order, 422 "
                   "IDEMPOTENCY_KEY_REUSED; while the first request is in progress, 409 "
                   "IDEMPOTENCY_KEY_IN_USE. "
                   "Scoped to the caller's API key, kept IDEMPOTENCY_TTL_S (default 24 h).",
    "schema": {"type": "string", "minLength": 1, "maxLength": schemas.IDEMPOTENCY_KEY_MAX,
               "pattern": "^[\\x20-\\x7e]+$"},
}
LIST_PARAMETERS = [
    {"name": "status", "in": "query", "required": False, "description": "Only orders in this status.",
     "schema": {"type": "string", "enum": shapes.STATUSES}},
    {"name": "clientOrderId", "in": "query", "required": False, "description": "Only orders with this id.",
     "schema": {"type": "string", "minLength": 1, "maxLength": schemas.CLIENT_ORDER_ID_MAX}},
    {"name": "limit", "in": "query", "required": False, "description": "Orders per page.",
     "schema": {"type": "integer", "minimum": 1, "maximum": schemas.LIST_LIMIT_MAX,
                "default": schemas.LIST_LIMIT_DEFAULT}},
    {"name": "before", "in": "query", "required": False,
     "description": "The `next` of the previous page (opaque); any other value is a 400.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
]
#: what a client does next with the orderId of a 201 (OpenAPI links; schemathesis follows them too)
ORDER_LINKS = {
    name: {"operationId": operation_id, "parameters": {"orderId": "$response.body#/orderId"},
           "description": description}
    for name, operation_id, description in (
        ("GetOrder", "getOrder", "The order's snapshot."),
        ("GetOrderEvents", "getOrderEvents", "The order's events so far."),
        ("CancelOrder", "cancelOrder", "Cancel it while it is not yet sent."))
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "integer", "minimum": 0}}}


def _error(description: str, *codes: str, retry_after: bool = False) -> dict[str, Any]:
    """An error answer: the Error shape, with an example of its first code."""
    listed = ", ".join(f"`{c}`" for c in codes)
    example: dict[str, Any] = {"code": codes[0], "message": f"{description}."}
    if codes[0] == "VALIDATION_ERROR":
        example.update(message="The order is not valid.", fields={"amountIn": ["Amount must be greater than 0."]})
    answer: dict[str, Any] = {"description": f"{description} (code {listed}).",
                              "content": {"application/json": {"schema": "Error",
                                                               "example": {"error": example}}}}
    if retry_after:
        answer["headers"] = dict(RETRY_AFTER)
    return answer


def _json(description: str, schema: Any, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


BAD_REQUEST = _error("A field, parameter or header is missing or invalid; every bad one is named in "
                     "`fields`", "VALIDATION_ERROR")
UNAUTHORIZED = _error("With AUTH=keys: no API key, or an unknown or revoked one", "UNAUTHORIZED")
ORDER_NOT_FOUND = _error("No order has this id (or it is another API key's)", "ORDER_NOT_FOUND")
UNAVAILABLE = _error("The database or Redis is not answering; nothing was changed", "SERVICE_UNAVAILABLE")
UPGRADE_REQUIRED = _error("A plain HTTP request to a WebSocket address", "UPGRADE_REQUIRED")

# --- the WebSockets, in words ---------------------------------------------------------------

CLOSE_CODES = {
    1000: "normal: the order's terminal event was sent (single-order socket)",
    1011: "the server could not stream (an internal failure); reconnect with `since`",
    1013: "try again later: this process holds MAX_SOCKETS_PER_PROCESS sockets",
    4400: "bad request: missing or malformed `orderId` or `since`",
    4401: "unauthorized (AUTH=keys): no API key, or an unknown or revoked one",
    4404: "no such order (or it is another API key's)",
    4429: "too many sockets: this API key (or client address with AUTH=off) holds MAX_SOCKETS_PER_KEY",
}
_CLOSE_CODES_TEXT = "\n".join(f"- `{code}`: {meaning}" for code, meaning in CLOSE_CODES.items())

ORDER_SOCKET = f"""**WebSocket.** Connect with `ws://HOST/api/orders/execute?orderId=<id>[&since=N]` (an
HTTP upgrade; with AUTH=keys add `&apiKey=<key>` or the `Authorization: Bearer` header). The server sends
every event of the order with `seq > N` (default 0) as a text message holding one `Event` object, first
those already stored, then live ones, each exactly once and in `seq` order, then closes with 1000 after the
terminal event (at once if the client already has it). It pings idle connections every 20 s and ignores
what the client sends. A refused socket is accepted, sent one `{{"error": {{"code", "message", "fields"}}}}`
message, then closed with its code:

{_CLOSE_CODES_TEXT}

A plain HTTP GET (no upgrade) is answered 426 `UPGRADE_REQUIRED`; that is the only answer this document can
describe as HTTP, so try-it-out shows it."""

#: the stream socket's conversation: (the client sends, the server answers)
STREAM_MESSAGES = (
    ('`{"action": "submit", "order": {…the POST body…}, "idempotencyKey": "…"}`',
     '`{"type": "accepted", "orderId": …, "status": "pending"}` (`"replayed": true` for a key seen '
     "before), then the order's events"),
    ('`{"action": "subscribe", "orderId": "…", "since": N}`',
     '`{"type": "subscribed", "orderId": …}`, then the events with `seq > N`: replay, then live, each '
     "once, in order"),
    ('`{"action": "subscribe", "all": true}`',
     '`{"type": "subscribed", "all": true}`, then every event of every order of the caller from then on '
     "(no replay)"),
    ('`{"action": "unsubscribe", "orderId": "…"}` or `{"action": "unsubscribe", "all": true}`',
     '`{"type": "unsubscribed", …}`; no more of those events'),
    ("anything invalid: not JSON, an unknown action, a bad `since`, an order that is not the caller's",
     '`{"type": "error", "error": {"code", "message", "fields"}}`; the socket stays open'),
)
_STREAM_TABLE = "\n".join(["| the client sends | the server answers |", "| --- | --- |"]
                          + [f"| {sends} | {answers} |" for sends, answers in STREAM_MESSAGES])

STREAM_SOCKET = f"""**WebSocket.** Connect with `ws://HOST/api/orders/stream` (with AUTH=keys `?apiKey=<key>`
or the `Authorization: Bearer` header): one socket for many orders, open until the client closes it. The
client sends JSON messages, each with an optional `requestId` (string or integer) that the answer echoes:

{_STREAM_TABLE}

Events are `Event` objects (each carries `orderId`); a subscription ends by itself after its order's
terminal event. The submit obeys the rules of POST /api/orders/execute, idempotency, rate limit and queue
limit included. Close codes when the socket is refused or fails:

{_CLOSE_CODES_TEXT}

A plain HTTP GET (no upgrade) is answered 426 `UPGRADE_REQUIRED`."""


def _websocket(path: str, messages: str) -> dict[str, Any]:
    return {"path": path, "protocol": "RFC 6455 WebSocket, JSON text messages", "messages": messages,
            "closeCodes": {str(code): meaning for code, meaning in CLOSE_CODES.items()},
            "auth": "AUTH=keys: `?apiKey=<key>` or `Authorization: Bearer <key>`; AUTH=off: none"}


# --- the operations, by Flask endpoint -------------------------------------------------------

def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) of everything orderengine may serve; the document lists those this
    app serves (GET / and /metrics come with the dashboard and metrics modules)."""
    return [
        ("/api/orders/execute", "post", {
            "tags": ["orders"], "operationId": "executeOrder", "summary": "Place a MARKET order",
            "description": "Validates the order, stores it and schedules it; follow it on the WebSocket at "
                           "the same address or with GET /api/orders/{orderId}/events. Bad input changes "
                           "nothing.",
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": schemas.OrderRequestSchema,
                "example": {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5",
                            "slippageBps": 50}}}},
            "responses": {
                "201": _json("Accepted (or, for a repeated Idempotency-Key with the same order, the first "
                             "answer again).", "Accepted", links=ORDER_LINKS, headers={
                    "Location": {"description": "/api/orders/{orderId}", "schema": {"type": "string"}},
                    "Idempotent-Replayed": {"description": "`true` when this is the answer to an earlier "
                                                           "request with the same Idempotency-Key.",
                                            "schema": {"type": "string", "enum": ["true"]}}}),
                "400": BAD_REQUEST, "401": UNAUTHORIZED,
                "409": _error("A request with this Idempotency-Key is still in progress; retry",
                              "IDEMPOTENCY_KEY_IN_USE"),
                "413": _error("The body is over 64 KiB", "PAYLOAD_TOO_LARGE"),
                "415": _error("The body is not JSON, or not sent as application/json",
                              "UNSUPPORTED_MEDIA_TYPE"),
                "422": _error("This Idempotency-Key came before with a different order; nothing was done",
                              "IDEMPOTENCY_KEY_REUSED"),
                "429": _error("Over RATE_LIMIT_PER_MINUTE order submissions in 60 s", "RATE_LIMITED",
                              retry_after=True),
                "503": _error("The queue is full (MAX_QUEUED_ORDERS; with Retry-After), or the database or "
                              "Redis is down; nothing was stored", "OVERLOADED", "SERVICE_UNAVAILABLE",
                              retry_after=True),
            }}),
        ("/api/orders/execute", "get", {
            "tags": ["websockets"], "operationId": "orderSocket",
            "summary": "WebSocket: the events of one order, replay then live",
            "description": ORDER_SOCKET,
            "parameters": [dict(ORDER_ID, **{"in": "query", "required": False,
                                             "description": "The order to follow (required by the socket)."}),
                           SINCE],
            "responses": {"101": {"description": "Switching Protocols: the WebSocket is open."},
                          "426": UPGRADE_REQUIRED},
            "x-websocket": _websocket("/api/orders/execute", "Event objects; one {\"error\": …} before a "
                                                             "refusal close")}),
        ("/api/orders/stream", "get", {
            "tags": ["websockets"], "operationId": "streamSocket",
            "summary": "WebSocket: one socket for many orders (submit, subscribe, unsubscribe)",
            "description": STREAM_SOCKET,
            "responses": {"101": {"description": "Switching Protocols: the WebSocket is open."},
                          "426": UPGRADE_REQUIRED},
            "x-websocket": _websocket("/api/orders/stream", "client: submit / subscribe / unsubscribe; "
                                                            "server: accepted / subscribed / unsubscribed / "
                                                            "error messages and Event objects")}),
        ("/api/orders", "get", {
            "tags": ["orders"], "operationId": "listOrders", "summary": "The caller's orders, newest first",
            "description": "A page at a time: pass `next` back as `before`. A page never repeats or skips an "
                           "order, even while new orders arrive.",
            "parameters": LIST_PARAMETERS,
            "responses": {"200": _json("A page of orders.", "OrderPage"), "400": BAD_REQUEST,
                          "401": UNAUTHORIZED, "503": UNAVAILABLE}}),
        ("/api/orders/{orderId}", "get", {
            "tags": ["orders"], "operationId": "getOrder", "summary": "An order's snapshot",
            "parameters": [ORDER_ID],
            "responses": {"200": _json("The order as it stands.", "Snapshot"), "400": BAD_REQUEST,
                          "401": UNAUTHORIZED, "404": ORDER_NOT_FOUND, "503": UNAVAILABLE}}),
        ("/api/orders/{orderId}/events", "get", {
            "tags": ["orders"], "operationId": "getOrderEvents", "summary": "An order's events, in seq order",
            "parameters": [ORDER_ID, SINCE],
            "responses": {"200": _json("The events with seq > since.",
                                       {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}),
                          "400": BAD_REQUEST, "401": UNAUTHORIZED, "404": ORDER_NOT_FOUND,
                          "503": UNAVAILABLE}}),
        ("/api/orders/{orderId}/cancel", "post", {
            "tags": ["orders"], "operationId": "cancelOrder", "summary": "Cancel an order not yet sent",
            "description": "An order in `pending`, `routing` or `retrying` ends `cancelled` (a terminal "
                           "event with `data.reason`); an order already cancelled answers 200 again, "
                           "unchanged. From `building` on, the swap may be on its way to the chain: 409, "
                           "and nothing changes.",
            "parameters": [ORDER_ID],
            "responses": {"200": _json("The order's snapshot, cancelled.", "Snapshot"), "400": BAD_REQUEST,
                          "401": UNAUTHORIZED, "404": ORDER_NOT_FOUND,
                          "409": _error("The order is `building` or later", "NOT_CANCELLABLE"),
                          "503": UNAVAILABLE}}),
        ("/api/venues", "get", {
            "tags": ["system"], "operationId": "listVenues", "summary": "The venue plugins and their pools",
            "responses": {"200": _json("Every venue plugin: loaded ones with their pools and fees, and any "
                                       "that failed to load, with why.", "Venues"),
                          "401": UNAUTHORIZED}}),
        ("/health", "get", {
            "tags": ["system"], "operationId": "health", "summary": "Are the database and Redis answering?",
            "security": [],
            "responses": {"200": _json("Every dependency answers.", "Health"),
                          "503": _json("A dependency is down; `failing` names it.", "Health")}}),
        ("/openapi.json", "get", {
            "tags": ["documentation"], "operationId": "openapiDocument", "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.", "content": {"application/json": {
                "schema": {"type": "object"}}}}}}),
        ("/docs", "get", {
            "tags": ["documentation"], "operationId": "docsPage", "summary": "This document, rendered",
            "security": [],
            "responses": {"200": {"description": "Swagger UI, every asset served from this host.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}}}),
        ("/", "get", {
            "tags": ["documentation"], "operationId": "dashboard", "summary": "The dashboard",
            "description": "A page for a person watching orders: it uses this API like any client.",
            "security": [],
            "responses": {"200": {"description": "The dashboard, every asset served from this host.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}}}),
        ("/metrics", "get", {
            "tags": ["system"], "operationId": "metrics", "summary": "Prometheus metrics",
            "description": "The engine's figures in Prometheus text format (under gunicorn, summed over its "
                           "processes).",
            "security": [],
            "responses": {"200": {"description": "Prometheus exposition format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}),
    ]


# --- the document -------------------------------------------------------------------------

def _client_error_codes() -> list[str]:
    """Every code an HTTP answer can carry; the codes of branches not built yet are listed by hand."""
    codes = {cls.code for cls in _subclasses(errors.EngineError)
             if not issubclass(cls, errors.ExecutionError)}
    codes |= set(HTTP_CODES.values()) | {"UNAUTHORIZED", "RATE_LIMITED", "OVERLOADED"}
    return sorted(codes - {"INTERNAL_ERROR"})


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _order_error_codes() -> list[str]:
    return sorted({cls.code for cls in _subclasses(errors.ExecutionError)})


def _description(auth_keys: bool) -> str:
    mode = ("This server runs with **AUTH=keys**: every `/api` request needs `Authorization: Bearer <key>` "
            "(use *Authorize* above)." if auth_keys else
            "This server runs with **AUTH=off**: no key is needed.")
    return f"""Order execution engine for Solana DEX market orders: routing across venues, execution with
retries, an event log per order, live status over WebSocket.

**Authentication.** {mode} With `AUTH=keys` every request under `/api` needs `Authorization: Bearer <key>`
(keys come from `orderengine keys create NAME`) and a WebSocket may send it as `?apiKey=<key>` instead; a
missing, unknown or revoked key is 401 `UNAUTHORIZED` (a WebSocket: close 4401). A caller sees only its own
orders. With `AUTH=off` (the default on a loopback HOST) no key is needed and every caller is one.

**Amounts** are decimal strings in every answer (`"1.5"`), never floats; a request may send `amountIn` as a
JSON number or a decimal string.

**Errors** have one shape: `{{"error": {{"code": "VALIDATION_ERROR", "message": "…", "fields": {{"amountIn":
["…"]}}}}}}`. No input a client can send yields a 500.

**WebSockets.** `GET /api/orders/execute?orderId=<id>[&since=N]` (one order) and `GET /api/orders/stream`
(many orders) are WebSocket addresses: see their operations under *websockets* and their `x-websocket`
extension. Close codes:

{_CLOSE_CODES_TEXT}
"""


def build_document(app: Flask) -> dict[str, Any]:
    """The document for this app: its auth mode, and the operations it serves."""
    settings = app.extensions["orderengine"].settings
    # auth_mode (the auth branch) resolves an unset AUTH; create_app has already refused a bad one
    auth_keys = getattr(settings, "auth_mode", settings.auth) == "keys"
    plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
    spec = APISpec(title=TITLE, version=_version(), openapi_version=OPENAPI_VERSION, plugins=[plugin],
                   info={"description": _description(auth_keys)}, servers=[{"url": "/"}],
                   tags=[{"name": "orders"}, {"name": "websockets", "description": "Described in words: "
                          "OpenAPI 3 has no WebSockets; try-it-out only shows the 426 of a plain GET."},
                         {"name": "system"}, {"name": "documentation"}])
    plugin.converter.add_attribute_function(_describe_custom_fields)
    spec.components.security_scheme(BEARER, {
        "type": "http", "scheme": "bearer", "description": "An API key from `orderengine keys create NAME` "
        "(AUTH=keys). WebSockets may send it as `?apiKey=<key>`. With AUTH=off it is not needed."})
    _add_schemas(spec)
    served = {(_placeholders(rule.rule), method.lower()) for rule in app.url_map.iter_rules()
              for method in rule.methods}
    for path, method, operation in _operations():
        if (_placeholders(path), method) not in served:
            continue
        if path.startswith("/api/") and "security" not in operation:
            operation = dict(operation, security=[{BEARER: []}] if auth_keys else [{}, {BEARER: []}])
        spec.path(path=path, operations={method: operation})
    return spec.to_dict()


def _add_schemas(spec: APISpec) -> None:
    spec.components.schema("Error", {"description": (
        "The one error shape. `error.code` is one of: " + ", ".join(_client_error_codes()) + ".")},
        schema=shapes.ErrorDoc)
    for name, schema in (("Accepted", shapes.AcceptedDoc), ("Snapshot", shapes.SnapshotDoc),
                         ("OrderPage", shapes.OrderPageDoc), ("Venues", shapes.VenuesDoc),
                         ("Health", shapes.HealthDoc)):
        spec.components.schema(name, schema=schema)
    data_refs = []
    for status, schema in shapes.EVENT_DATA.items():
        name = f"{status.capitalize()}Data"
        spec.components.schema(name, schema=schema)
        data_refs.append({"$ref": f"#/components/schemas/{name}"})
    spec.components.schema("Event", schema=shapes.EventDoc)
    event = spec.components.schemas["Event"]
    event["properties"]["data"] = {
        "anyOf": data_refs,
        "description": "Depends on `status`: pending → PendingData, routing → RoutingData, building → "
                       "BuildingData, submitted → SubmittedData, confirmed → ConfirmedData, retrying → "
                       "RetryingData, failed → FailedData, cancelled → CancelledData. Order error codes: "
                       + ", ".join(_order_error_codes()) + " (the list may grow: match the codes you "
                       "handle, treat others as failures)."}


def _placeholders(path: str) -> str:
    """/api/orders/<order_id> and /api/orders/{orderId} both as /api/orders/{}."""
    return re.sub(r"<[^<>]+>|\{[^{}]+\}", "{}", path)


def _schema_name(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return re.sub(r"(Doc|Schema)$", "", cls.__name__)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("orderengine")
    except Exception:  # pragma: no cover - running from a checkout that was never installed
        return "0"
