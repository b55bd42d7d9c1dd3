"""One exception hierarchy with stable codes.

Every error a client or an order can see is one of these; `code` is the stable
string clients match on, `http_status` is how the API answers it, and
`retryable` is how the worker treats it when it ends an execution attempt.
"""
from __future__ import annotations

from typing import Any

from orderengine.logs import redact


class EngineError(Exception):
    code = "INTERNAL_ERROR"
    http_status = 500
    retryable = False

    def __init__(self, message: str | None = None, **details: Any) -> None:
        # a message may quote a venue's exception, and reaches clients (responses, events):
        # whatever secret it carries (a URL's password, an API key) is blanked here, once
        message = redact(message) if message else message
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return body


# --- what a client sent -------------------------------------------------------

class ValidationError(EngineError):
    """The request is not valid."""
    code = "VALIDATION_ERROR"
    http_status = 400

    def __init__(self, message: str = "The request is not valid.",
                 fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message, **({"fields": fields} if fields else {}))
        self.fields = fields or {}


class NotFound(EngineError):
    """No such resource."""
    code = "NOT_FOUND"
    http_status = 404


class OrderNotFound(NotFound):
    """No order has this id."""
    code = "ORDER_NOT_FOUND"


class Unauthorized(EngineError):
    """A missing, unknown or revoked API key (AUTH=keys)."""
    code = "UNAUTHORIZED"
    http_status = 401




class UpgradeRequired(EngineError):
    """This address is a WebSocket endpoint."""
    code = "UPGRADE_REQUIRED"
    http_status = 426




class NotCancellable(EngineError):
    """The order can no longer be cancelled: its swap may already be on its way to the venue."""
    code = "NOT_CANCELLABLE"
    http_status = 409


class IdempotencyKeyReused(EngineError):
    """This Idempotency-Key was sent before with a different request."""
    code = "IDEMPOTENCY_KEY_REUSED"
    http_status = 422


class IdempotencyKeyInUse(EngineError):
    """A request with this Idempotency-Key is still in progress."""
    code = "IDEMPOTENCY_KEY_IN_USE"
    http_status = 409


class UnsupportedMediaType(EngineError):
    """The request body must be JSON (Content-Type: application/json)."""
    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415




class RateLimited(EngineError):
    """Too many orders from this caller in the last 60 seconds."""
    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, retry_after_s: int, message: str | None = None) -> None:
        super().__init__(message or f"Too many orders in the last 60 seconds; try again in {retry_after_s} s.",
                         retryAfter=retry_after_s)
        self.retry_after_s = retry_after_s


class Overloaded(EngineError):
    """Too many orders are waiting to be executed; the order was not accepted."""
    code = "OVERLOADED"
    http_status = 503

    def __init__(self, retry_after_s: int, message: str | None = None) -> None:
        super().__init__(message or "Too many orders are waiting to be executed; nothing was stored. "
                         f"Try again in {retry_after_s} s.", retryAfter=retry_after_s)
        self.retry_after_s = retry_after_s


class TooManySockets(EngineError):
    """This caller has as many WebSockets open as it may (MAX_SOCKETS_PER_KEY)."""
    code = "TOO_MANY_SOCKETS"
    http_status = 429
    close_code = 4429


class ServerBusy(EngineError):
    """This server process holds as many WebSockets as it may; try again later."""
    code = "SERVER_BUSY"
    http_status = 503
    close_code = 1013  # RFC 6455: try again later


class ServiceUnavailable(EngineError):
    """A dependency (database, queue) is not answering; nothing was changed."""
    code = "SERVICE_UNAVAILABLE"
    http_status = 503


# --- what happened to an order ------------------------------------------------

class ExecutionError(EngineError):
    """An execution attempt failed."""
    code = "EXECUTION_ERROR"
    http_status = 502
    retryable = True


class NoRoute(ExecutionError):
    """No venue returned a usable quote."""
    code = "NO_ROUTE"


class InsufficientLiquidity(ExecutionError):
    """No venue holds enough liquidity for this order."""
    code = "INSUFFICIENT_LIQUIDITY"
    retryable = False


class SlippageExceeded(ExecutionError):
    """The swap would pay out less than minAmountOut."""
    code = "SLIPPAGE_EXCEEDED"


class TransactionFailed(ExecutionError):
    """The transaction failed on chain."""
    code = "TX_FAILED"


class VenueUnavailable(ExecutionError):
    """The venue did not answer."""
    code = "VENUE_UNAVAILABLE"


class VenueTimeout(VenueUnavailable):
    """The venue did not answer within the engine's time limit (or every thread the engine
    lends it is still waiting on earlier calls): what it did with the call is unknown."""
    code = "VENUE_TIMEOUT"


class StepFailed(ExecutionError):
    """A step of the order kept failing (STEP_MAX_FAILURES times in a row); the order was given up."""
    code = "STEP_FAILED"
    retryable = False


class TxDropped(ExecutionError):
    """The venue still does not know the submitted transaction after its validity window: it
    can no longer land. Not retried: the venue lost a transaction it had given a signature for."""
    code = "TX_DROPPED"
    retryable = False


class VenueUnreachable(ExecutionError):
    """The venue could not be asked about a transaction that may have gone out, past its
    validity window: whether the swap filled is unknown. Not sent again, not retried (a new
    attempt could fill twice); `event_data` names what to reconcile with the venue."""
    code = "VENUE_UNREACHABLE"
    retryable = False

    def __init__(self, message: str | None = None, *, venue: str | None = None, tx_hash: str | None = None,
                 client_tx_id: str | None = None, sent_at: str | None = None) -> None:
        super().__init__(message)
        #: merged into the `failed` event's data: the outcome is unknown, and where to look
        self.event_data: dict[str, Any] = {"outcome": "unknown", "venue": venue, "txHash": tx_hash,
                                           "clientTxId": client_tx_id, "sentAt": sent_at}


class OrderExpired(ExecutionError):
    """The order was not submitted within ORDER_TTL_MS of being accepted; it was never sent."""
    code = "EXPIRED"
    retryable = False




def error_from_dict(body: dict[str, Any]) -> ExecutionError:
    """Rebuild an execution error from its stored form (code + message)."""
    for cls in _all_subclasses(ExecutionError):
        if cls.code == body.get("code"):
            return cls(body.get("message"))
    err = ExecutionError(body.get("message"))
    err.code = body.get("code", ExecutionError.code)
    return err


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out
