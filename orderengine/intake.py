"""Taking an order in: store it, then queue its first step.

If the queue cannot be reached the order is withdrawn and the client gets a
503: nothing is stored that nobody will execute, and nothing executes that the
client was told failed. If a worker got the step after all (the queue took it
and then the connection broke), the order is live and the answer is 201.
"""
from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from orderengine.clock import utcnow
from orderengine.errors import ServiceUnavailable
from orderengine.events import Event
from orderengine.runtime import Runtime
from orderengine.schemas import OrderRequest
from orderengine.store import Work, new_token

log = logging.getLogger(__name__)


def submit_order(runtime: Runtime, request: OrderRequest) -> Event:
    order_id = str(uuid.uuid4())
    token = new_token()
    try:
        event = _create(runtime, request, Work(token, None, utcnow()), order_id)
    except SQLAlchemyError as exc:
        log.error("order not stored: database unavailable", extra={"error": str(exc)})
        raise ServiceUnavailable("The database is not available; the order was not accepted.") from exc
    try:
        runtime.queue_new_orders([(order_id, token)])
    except Exception as exc:
        log.error("order withdrawn: queue unavailable", extra={"order_id": order_id, "error": str(exc)})
        try:
            withdrawn = runtime.store.withdraw(order_id)
        except SQLAlchemyError:
            log.exception("could not withdraw an unqueued order; the sweep will run it",
                          extra={"order_id": order_id})
            withdrawn = False
        if not withdrawn:
            return event  # a worker has it, or the sweep will: the order is live
        raise ServiceUnavailable("The order queue is not available; the order was not accepted.") from exc
    log.info("order accepted", extra={"order_id": order_id, **request.to_dict()})
    return event


def _create(runtime: Runtime, request: OrderRequest, work: Work, order_id: str) -> Event:
    """Store the order; a pooled connection that died with a database restart is
    replaced and the insert tried once more, rather than answering 503."""
    try:
        return runtime.store.create(request, work, order_id=order_id)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return runtime.store.create(request, work, order_id=order_id)
