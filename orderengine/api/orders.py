"""/api/orders: submit a MARKET order, read its snapshot and its events."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from orderengine.auth import current_caller
from orderengine.errors import UnsupportedMediaType, UpgradeRequired
from orderengine.intake import submit_order
from orderengine.schemas import (
    NotJson, encode_cursor, parse_events_since, parse_idempotency_key, parse_json, parse_list_query,
    parse_order_id, parse_order_request,
)
from orderengine.store import snapshot

bp = Blueprint("orders", __name__, url_prefix="/api/orders")

MAX_BODY_BYTES = 64 * 1024
CANCEL_REASON = "Cancelled at the client's request."


def runtime():
    return current_app.extensions["orderengine"]


def limit_key() -> str:
    """Whose limits this request counts against: the caller's API key when authentication
    set one (`g.caller.limit_key`), otherwise the client's address."""
    caller = getattr(g, "caller", None)
    key = getattr(caller, "limit_key", None)
    return key if key else f"addr:{request.remote_addr}"


@bp.post("/execute")
def execute():
    order = parse_order_request(_json_body())
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    accepted = submit_order(runtime(), order, key, caller=current_caller().owner, limit_key=limit_key())
    response = jsonify({"orderId": accepted.order_id, "status": "pending"})
    response.status_code = 201
    response.headers["Location"] = f"/api/orders/{accepted.order_id}"
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/execute")
def execute_without_upgrade():
    """The WebSocket's address asked for over plain HTTP: say how to use it."""
    raise UpgradeRequired("GET /api/orders/execute is a WebSocket: connect with "
                          "ws://.../api/orders/execute?orderId=<id>[&since=N].")


@bp.get("/stream")
def stream_without_upgrade():
    """The many-orders WebSocket asked for over plain HTTP (it is not an order id)."""
    raise UpgradeRequired("GET /api/orders/stream is a WebSocket: connect with ws://.../api/orders/stream.")


@bp.get("")
def list_orders():
    """The caller's orders, newest first, a page at a time (keyset: `next` -> `before`)."""
    query = parse_list_query(request.args)
    rows = runtime().store.page(before=query.before, limit=query.limit + 1, status=query.status,
                                client_order_id=query.client_order_id, owner=current_caller().scope)
    page = rows[:query.limit]
    more = len(rows) > query.limit
    return jsonify({"orders": [snapshot(r) for r in page],
                    "next": encode_cursor(page[-1].created_at, page[-1].id) if more else None})


@bp.post("/<order_id>/cancel")
def cancel_order(order_id: str):
    """Cancel an order not yet handed to a venue; 409 NOT_CANCELLABLE from `building` on."""
    row = runtime().store.cancel(parse_order_id(order_id, "id"), CANCEL_REASON, owner=current_caller().scope)
    return jsonify(snapshot(row))


@bp.get("/<order_id>")
def get_order(order_id: str):
    row = runtime().store.require(parse_order_id(order_id, "id"), owner=current_caller().scope)
    return jsonify(snapshot(row))


@bp.get("/<order_id>/events")
def get_events(order_id: str):
    order_id = parse_order_id(order_id, "id")
    since = parse_events_since(request.args.get("since"))
    runtime().store.require(order_id, owner=current_caller().scope)
    return jsonify([e.to_dict() for e in runtime().store.events(order_id, since)])


def _json_body() -> Any:
    """The body as JSON with exact numbers (`parse_json`); a body that is not JSON, or not
    sent as application/json, is a 415; one with a key twice a 400."""
    if not request.is_json:
        raise UnsupportedMediaType("Send the order as JSON with Content-Type: application/json.")
    raw = request.get_data(cache=False)  # MAX_CONTENT_LENGTH makes an oversized body a 413
    try:
        return parse_json(raw)
    except NotJson as exc:
        raise UnsupportedMediaType(f"The body is not valid JSON: {exc}") from None
