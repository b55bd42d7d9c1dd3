"""What the API answers, as marshmallow schemas written only to document it.

The views build their answers by hand (store.snapshot, Event.to_dict); these
schemas describe those answers for /openapi.json and are never used to
serialise or validate. Requests are documented from the real validating
schemas in orderengine/schemas.py, not from here.
"""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from orderengine.lifecycle import Status

STATUSES = [s.value for s in Status]
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def _decimal(description: str, **kwargs) -> fields.String:
    """An amount: always a plain decimal string in answers ("1.5", never 1.5 or "1.5e0")."""
    return fields.String(metadata={"description": description, "format": "decimal",
                                   "pattern": DECIMAL_PATTERN, "example": "1.5"}, **kwargs)


def _text(description: str, **kwargs) -> fields.String:
    return fields.String(metadata={"description": description}, **kwargs)


class ErrorBodyDoc(Schema):
    code = _text("A stable code clients match on (see the list in the Error schema).", required=True)
    message = _text("What went wrong, for a human.", required=True)
    bad_fields = fields.Dict(data_key="fields", keys=fields.String(), values=fields.List(fields.String()),
                             metadata={
        "description": "For VALIDATION_ERROR: every bad field by its API name (camelCase, or a header's "
                       "name, or `_schema` for the body as a whole), with its messages."})


class ErrorDoc(Schema):
    """The one error shape of every HTTP answer that is not a success, and of socket errors."""
    error = fields.Nested(ErrorBodyDoc, required=True)


class OrderErrorDoc(Schema):
    """Why an attempt or an order failed."""
    code = _text("NO_ROUTE, INSUFFICIENT_LIQUIDITY, SLIPPAGE_EXCEEDED, TX_FAILED, VENUE_UNAVAILABLE, "
                 "EXPIRED, "
                "... (see the Event schema).", required=True)
    message = _text("What went wrong, for a human.", required=True)


class AcceptedDoc(Schema):
    orderId = fields.UUID(required=True, metadata={"description": "The new order's id."})
    status = fields.String(required=True, validate=validate.OneOf(["pending"]))


class SnapshotDoc(Schema):
    """An order as it stands now (GET /api/orders/{orderId})."""
    orderId = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["MARKET"]))
    tokenIn = _text("Token symbol, e.g. SOL.", required=True)
    tokenOut = _text("Token symbol, e.g. USDC.", required=True)
    amountIn = _decimal("Amount of tokenIn to sell.", required=True)
    slippageBps = fields.Integer(required=True, metadata={"minimum": 0, "maximum": 10000})
    clientOrderId = _text("The client's own id, as sent.", required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    attempts = fields.Integer(required=True, metadata={"description": "Execution attempts started so far."})
    venue = _text("The venue of the current or last attempt.", required=True, allow_none=True)
    txHash = _text("The transaction once submitted.", required=True, allow_none=True)
    amountOut = _decimal("What the swap paid out (once confirmed).", required=True, allow_none=True)
    executedPrice = _decimal("amountOut / amountIn (once confirmed).", required=True, allow_none=True)
    error = fields.Nested(OrderErrorDoc, required=True, allow_none=True)
    createdAt = fields.DateTime(required=True, metadata={"example": "2026-11-24T10:00:00.123Z"})
    updatedAt = fields.DateTime(required=True, metadata={"example": "2026-11-24T10:00:02.456Z"})


class OrderPageDoc(Schema):
    orders = fields.List(fields.Nested(SnapshotDoc), required=True,
                         metadata={"description": "Newest first."})
    next = _text("Pass it back as `before` for the following page; null on the last page.",
                required=True, allow_none=True)


# --- the `data` of each event status ------------------------------------------------

class PendingDataDoc(Schema):
    """`pending`: the accepted order, as validated (symbols upper-case, amount canonical)."""
    type = fields.String(validate=validate.OneOf(["MARKET"]))
    tokenIn = _text("Token symbol.")
    tokenOut = _text("Token symbol.")
    amountIn = _decimal("Amount of tokenIn.")
    slippageBps = fields.Integer()
    clientOrderId = _text("As sent.", allow_none=True)


class RoutingDataDoc(Schema):
    """`routing`: an attempt started; quotes are being fetched from these venues."""
    venues = fields.List(fields.String(), metadata={"description": "The venues being asked."})


class QuoteDoc(Schema):
    """One venue's quote, or (with only `venue` and `error`) why it gave none."""
    venue = _text("The venue.", required=True)
    pool = _text("The pool quoted.")
    amountOut = _decimal("The pool's output.")
    fee = _decimal("The venue's fee.")
    feeToken = _text("The token the fee is charged in.")
    netOut = _decimal("What the user would receive: amountOut less any fee charged in the output token.")
    price = _decimal("netOut / amountIn.")
    priceImpactPct = _decimal("How much worse than the pool's mid price, fee excluded, in percent.")
    error = fields.Nested(OrderErrorDoc, metadata={"description": "Set instead of the figures when the venue "
                                                                  "failed or timed out while quoting."})


class PlanStepDoc(Schema):
    """One instruction of the transaction: wrapSol, swap or unwrapSol."""
    step = fields.String(required=True, validate=validate.OneOf(["wrapSol", "swap", "unwrapSol"]))
    amount = _decimal("wrapSol: SOL wrapped.")
    venue = _text("swap: the venue.")
    pool = _text("swap: the pool.")
    mintIn = _text("swap: the input mint.")
    mintOut = _text("swap: the output mint.")
    amountIn = _decimal("swap: amount in.")
    minAmountOut = _decimal("swap: the slippage floor.")


class BuildingDataDoc(Schema):
    """`building`: the routing decision; the venue with the highest netOut wins."""
    quotes = fields.List(fields.Nested(QuoteDoc), metadata={"description": "One per venue."})
    venue = _text("The chosen venue.")
    pool = _text("The chosen pool.")
    expectedOut = _decimal("The winner's netOut.")
    minAmountOut = _decimal("expectedOut × (1 − slippageBps/10000), rounded down to the token's decimals; "
                          "a swap that would pay less fails SLIPPAGE_EXCEEDED.")
    plan = fields.List(fields.Nested(PlanStepDoc), metadata={"description": "wrap SOL, swap, unwrap SOL, "
                                                                            "as needed."})
    clientTxId = _text("The idempotency id the venue executes this attempt under.")


class SubmittedDataDoc(Schema):
    """`submitted`: the swap was sent."""
    venue = _text("The venue.")
    txHash = _text("The transaction.")


class ConfirmedDataDoc(Schema):
    """`confirmed` (terminal): the swap settled."""
    venue = _text("The venue.")
    txHash = _text("The transaction.")
    amountOut = _decimal("What the swap paid out.")
    executedPrice = _decimal("amountOut / amountIn.")
    fee = _decimal("The fee paid.")


class RetryingDataDoc(Schema):
    """`retrying`: an attempt failed and another will start after retryInMs."""
    attempt = fields.Integer(metadata={"description": "The attempt that failed."})
    error = fields.Nested(OrderErrorDoc)
    retryInMs = fields.Integer()


class FailedDataDoc(Schema):
    """`failed` (terminal)."""
    error = fields.Nested(OrderErrorDoc)
    attempts = fields.Integer()


class CancelledDataDoc(Schema):
    """`cancelled` (terminal): cancelled at the client's request."""
    reason = _text("Why.")


EVENT_DATA = {
    "pending": PendingDataDoc, "routing": RoutingDataDoc, "building": BuildingDataDoc,
    "submitted": SubmittedDataDoc, "confirmed": ConfirmedDataDoc, "retrying": RetryingDataDoc,
    "failed": FailedDataDoc, "cancelled": CancelledDataDoc,
}


class EventDoc(Schema):
    """One change of an order's status; `seq` runs 1, 2, 3, ... per order with no gaps."""
    orderId = fields.UUID(required=True)
    seq = fields.Integer(required=True, metadata={"minimum": 1})
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    at = fields.DateTime(required=True, metadata={"example": "2026-11-24T10:00:00.123Z"})
    attempt = fields.Integer(required=True, metadata={"description": "The attempt this event belongs to "
                                                                     "(0 before the first)."})
    # `anyOf` over the per-status shapes is filled in by document.py, which knows their $refs.
    data = fields.Dict(required=True)


class PoolDoc(Schema):
    pool = _text("The pool's id.", required=True)
    tokens = fields.List(fields.String(), required=True)
    feePct = _decimal("The pool's fee, in percent.", required=True)
    midPrice = _decimal("The pool's mid price.", required=True)
    liquidity = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                            metadata={"description": "Reserve per token, as decimal strings."})


class VenueDoc(Schema):
    name = _text("The venue plugin's name.", required=True)
    status = fields.String(required=True, validate=validate.OneOf(["loaded", "unavailable", "failed"]),
                           metadata={"description": "failed: the plugin did not load; unavailable: it "
                                                    "did not answer just now."})
    capabilities = fields.List(fields.String())
    error = _text("Why it failed or is unavailable.")
    pools = fields.List(fields.Nested(PoolDoc), required=True)


class VenuesDoc(Schema):
    venues = fields.List(fields.Nested(VenueDoc), required=True)


class HealthDoc(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True, metadata={
        "description": "database, redis (where configured), venues: each with `ok`."})
    failing = fields.List(fields.String(),
                          metadata={"description": "Present on 503: the checks that failed."})
