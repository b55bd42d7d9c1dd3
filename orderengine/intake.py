"""Taking an order in: store it, then queue its first step.

If the queue cannot be reached the order is withdrawn and the client gets a
503: nothing is stored that nobody will execute, and nothing executes that the
client was told failed. (A step that did reach the queue before the error is
dropped by the worker: its order is gone.)
"""
from __future__ import annotations

import logging
import uuid

from orderengine.clock import utcnow
from orderengine.errors import ServiceUnavailable
from orderengine.events import Event
from orderengine.queue import PRIORITY_NEW_ORDER
from orderengine.runtime import Runtime
from orderengine.schemas import OrderRequest
from orderengine.store import Work, new_token

log = logging.getLogger(__name__)


def submit_order(runtime: Runtime, request: OrderRequest) -> Event:
    order_id = str(uuid.uuid4())
    token = new_token()
    try:
        event = runtime.store.create(request, Work(token, None, utcnow()), order_id=order_id)
    except Exception as exc:
        log.error("order not stored: database unavailable", extra={"error": str(exc)})
        raise ServiceUnavailable("The database is not available; the order was not accepted.") from exc
    try:
        runtime.enqueue(order_id, token, priority=PRIORITY_NEW_ORDER)
    except Exception as exc:
        log.error("order withdrawn: queue unavailable", extra={"order_id": order_id, "error": str(exc)})
        try:
            runtime.store.withdraw(order_id)
        except Exception:
            log.exception("could not withdraw an unqueued order; the sweeper will run it",
                          extra={"order_id": order_id})
        raise ServiceUnavailable("The order queue is not available; the order was not accepted.") from exc
    log.info("order accepted", extra={"order_id": order_id, **request.to_dict()})
    return event
