"""What clients send, validated into value objects.

Every check on client input lives here so that a view only calls a `parse_*`
function and gets either a value object or an `errors.ValidationError` naming
each bad field by its API (camelCase) name. Amounts are `Decimal` from the
first byte: a float is read through its shortest repr, never `Decimal(float)`.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

import marshmallow
from marshmallow import fields, validate, validates_schema

from orderengine.amounts import decimal_str
from orderengine.errors import ValidationError
from orderengine.lifecycle import Status
from orderengine.tokens import TOKENS, U64_MAX, Token, find_token

ORDER_TYPES = ("MARKET",)
DEFAULT_SLIPPAGE_BPS = 50
MAX_SLIPPAGE_BPS = 10_000
CLIENT_ORDER_ID_MAX = 64
MAX_AMOUNT_DIGITS = 20  # digits before the point: beyond any token's u64 of base units

_PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_SINCE = re.compile(r"[0-9]{1,18}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_NOT_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
_MISSING = "Missing data for required field."
_STATUSES = tuple(s.value for s in Status)


@dataclass(frozen=True)
class OrderRequest:
    type: str
    token_in: Token
    token_out: Token
    amount_in: Decimal
    slippage_bps: int
    client_order_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "tokenIn": self.token_in.symbol,
            "tokenOut": self.token_out.symbol,
            "amountIn": decimal_str(self.amount_in),
            "slippageBps": self.slippage_bps,
            "clientOrderId": self.client_order_id,
        }


def _echo(value: object) -> str:
    """Client text quoted back in a message, cut short so a message stays a message."""
    text = str(value)
    return text if len(text) <= 64 else text[:61] + "..."


class TokenField(fields.Field):
    """A token by symbol (any case) or exact mint address."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Token:
        if not isinstance(value, str):
            raise marshmallow.ValidationError("Not a valid string.")
        token = find_token(value)
        if token is None:
            supported = ", ".join(t.symbol for t in TOKENS)
            raise marshmallow.ValidationError(
                f"Unknown token '{_echo(value)}'; supported: {supported} (or their mint addresses).")
        return token


class AmountField(fields.Field):
    """A positive, finite amount as an exact Decimal.

    Accepts a JSON number (int, or float read through its repr so 0.1 stays
    0.1) or a plain decimal string such as "1.5" or "-2" (the sign is parsed
    so a negative gets a clear "must be greater than 0"). Rejected: booleans,
    NaN/Infinity in any form, strings with an exponent ("1e3"), hex,
    whitespace and empty strings - the API writes amounts as plain decimals
    and reads them the same way. Precision and size depend on the token and
    are checked by the schema.
    """

    default_error_messages = {
        "invalid": "Not a valid amount; send a JSON number or a decimal string like \"1.5\".",
        "not_finite": "Amount must be a finite number.",
        "not_positive": "Amount must be greater than 0.",
        "too_large": "Amount is too large.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int):
            amount = Decimal(value)
        elif isinstance(value, float):
            amount = Decimal(repr(value))
        elif isinstance(value, Decimal):  # the API decodes JSON numbers with their exact digits
            amount = value
        elif isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value):
            amount = Decimal(value)
        elif isinstance(value, str) and value.strip().lstrip("+-").lower() in _NOT_FINITE:
            raise self.make_error("not_finite")
        else:
            raise self.make_error("invalid")
        if not amount.is_finite():
            raise self.make_error("not_finite")
        if amount <= 0:
            raise self.make_error("not_positive")
        if amount.adjusted() > MAX_AMOUNT_DIGITS:  # before _canonical writes out 1e300000000
            raise self.make_error("too_large")
        return _canonical(amount)


def _canonical(amount: Decimal) -> Decimal:
    """The same value without trailing fractional zeros or a positive exponent.

    Built from the digit tuple, not with normalize()/quantize(), which round
    to the context's 28 digits and could silently change a long input.
    """
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    digits = list(digits)
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exponent += 1
    if exponent > 0:
        digits += [0] * exponent
        exponent = 0
    return Decimal((sign, tuple(digits), exponent))


def _printable_text(value: str) -> None:
    """A client's identifier is printable text in NFC: no control or format characters (a
    right-to-left override would make one id look like another), no lone surrogates, and
    one spelling per string (two normalizations of one text would be two ids)."""
    if not value.isprintable():
        raise marshmallow.ValidationError(
            "Must be printable text: no control characters, format characters (such as direction "
            "marks), lone surrogates or line breaks.")
    if not unicodedata.is_normalized("NFC", value):
        raise marshmallow.ValidationError("Must be in Unicode normalization form NFC.")


def _order_type(value: str) -> None:
    if value not in ORDER_TYPES:
        raise marshmallow.ValidationError(
            f"Unsupported order type '{_echo(value)}'; supported: {', '.join(ORDER_TYPES)}.")


class OrderRequestSchema(marshmallow.Schema):
    """The body of POST /api/orders/execute; unknown fields are an error (RAISE is the default)."""

    type = fields.String(required=True, validate=_order_type)
    token_in = TokenField(required=True, data_key="tokenIn")
    token_out = TokenField(required=True, data_key="tokenOut")
    amount_in = AmountField(required=True, data_key="amountIn")
    slippage_bps = fields.Integer(
        strict=True, load_default=DEFAULT_SLIPPAGE_BPS, data_key="slippageBps",
        error_messages={"invalid": "Not a valid integer; send a whole number of basis points."},
        validate=validate.Range(0, MAX_SLIPPAGE_BPS,
                                error=f"Must be between 0 and {MAX_SLIPPAGE_BPS} basis points."))
    client_order_id = fields.String(
        allow_none=True, load_default=None, data_key="clientOrderId",
        validate=[validate.Length(1, CLIENT_ORDER_ID_MAX), _printable_text])

    # Cross-field checks run even when other fields failed, so one answer lists every problem.
    @validates_schema(skip_on_field_errors=False)
    def _tokens_differ(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "token_in" in data and data.get("token_out") == data["token_in"]:
            raise marshmallow.ValidationError("tokenOut must differ from tokenIn.", "token_out")

    @validates_schema(skip_on_field_errors=False)
    def _amount_fits_token(self, data: dict[str, Any], **kwargs: Any) -> None:
        token, amount = data.get("token_in"), data.get("amount_in")
        if token is None or amount is None:
            return
        places = max(0, -amount.as_tuple().exponent)  # canonical: no trailing zeros
        if places > token.decimals:
            raise marshmallow.ValidationError(
                f"Too many decimal places: {token.symbol} has {token.decimals}.", "amount_in")
        if amount > token.from_base(U64_MAX):
            raise marshmallow.ValidationError(
                f"Amount is too large: at most {decimal_str(token.from_base(U64_MAX))} {token.symbol}.",
                "amount_in")


_ORDER_SCHEMA = OrderRequestSchema()


class NotJson(ValueError):
    """The text is not JSON (or not UTF-8)."""


#: a JSON integer longer than this is refused before Python turns it into an int
MAX_INT_CHARS = 4000


def parse_json(raw: str | bytes) -> Any:
    """A client's JSON with exact numbers (Decimal, never float). NotJson when it is not
    JSON; ValidationError for an object with a key twice (a trading API must not pick one
    of two amounts silently) or an integer too long to be an amount."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_float=Decimal, parse_int=_parse_int, object_pairs_hook=_unique_keys)
    except _Refused as exc:
        raise ValidationError("The request is not valid.", fields={"_schema": [str(exc)]}) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotJson(str(exc).split("\n")[0][:120]) from None


class _Refused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_CHARS:
        raise _Refused("A number in the body is too long.")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Refused(f"Duplicate key '{_echo(twice)}': send each field once.")
    return out


def parse_order_request(payload: object) -> OrderRequest:
    """Validate a decoded JSON body; raise ValidationError(message, fields={field: [messages]})."""
    try:
        # Any JSON value may arrive; marshmallow reports a non-object as "_schema".
        data = _ORDER_SCHEMA.load(payload)  # type: ignore[arg-type]
    except marshmallow.ValidationError as err:
        raise ValidationError("The order is not valid.", fields=_flat(err.normalized_messages())) from None
    return OrderRequest(**data)


def _flat(messages: dict[str, Any]) -> dict[str, list[str]]:
    return {key: [str(m) for m in (value if isinstance(value, list) else [value])]
            for key, value in messages.items()}


def parse_events_since(value: str | None) -> int:
    """?since=N: the last event seq a client has seen; absent means from the start."""
    if value is None:
        return 0
    if not isinstance(value, str) or not _SINCE.fullmatch(value):
        raise ValidationError("The query is not valid.", fields={
            "since": ["Must be a non-negative integer written in digits (at most 18)."]})
    return int(value)


def parse_order_id(value: str | None, field: str = "orderId") -> str:
    """An order id from a URL or message: a canonical 36-character UUID, returned lower-cased."""
    if value is None:
        raise ValidationError("The order id is not valid.", fields={field: [_MISSING]})
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ValidationError("The order id is not valid.", fields={
            field: ["Not a valid order id; expected a UUID like 123e4567-e89b-12d3-a456-426614174000."]})
    return value.lower()


# --- GET /api/orders ------------------------------------------------------------------

LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 500
_LIST_ARGS = frozenset({"status", "clientOrderId", "limit", "before"})


@dataclass(frozen=True)
class ListQuery:
    status: str | None
    client_order_id: str | None
    limit: int
    before: tuple[dt.datetime, str] | None


def parse_list_query(args: Mapping[str, str]) -> ListQuery:
    """?status=&clientOrderId=&limit=&before=: every bad argument named at once."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(args) - _LIST_ARGS)
    if unknown:
        errors["_schema"] = [f"Unknown query argument(s): {', '.join(_echo(u) for u in unknown)}."]
    status = args.get("status")
    if status is not None and status not in _STATUSES:
        errors["status"] = [f"Must be one of: {', '.join(_STATUSES)}."]
    client_order_id = args.get("clientOrderId")
    if client_order_id is not None and not 1 <= len(client_order_id) <= CLIENT_ORDER_ID_MAX:
        errors["clientOrderId"] = [f"Must be 1 to {CLIENT_ORDER_ID_MAX} characters."]
    limit = LIST_LIMIT_DEFAULT
    raw_limit = args.get("limit")
    if raw_limit is not None:
        if re.fullmatch(r"[0-9]{1,4}", raw_limit) and 1 <= int(raw_limit) <= LIST_LIMIT_MAX:
            limit = int(raw_limit)
        else:
            errors["limit"] = [f"Must be an integer from 1 to {LIST_LIMIT_MAX}."]
    before = None
    if args.get("before") is not None:
        before = decode_cursor(args["before"])
        if before is None:
            errors["before"] = ["Not a cursor this API gave out: pass back the `next` of a previous page."]
    if errors:
        raise ValidationError("The query is not valid.", fields=errors)
    return ListQuery(status, client_order_id, limit, before)


def encode_cursor(created_at: dt.datetime, order_id: str) -> str:
    """An opaque cursor for the order after which the next page starts."""
    raw = json.dumps([created_at.astimezone(dt.timezone.utc).isoformat(), order_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[dt.datetime, str] | None:
    if not isinstance(text, str) or not 1 <= len(text) <= 200:
        return None
    try:
        at, order_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        moment = dt.datetime.fromisoformat(at)
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error):
        return None
    if moment.tzinfo is None or not isinstance(order_id, str) or not _UUID.fullmatch(order_id):
        return None
    return moment, order_id


IDEMPOTENCY_KEY_MAX = 255


def parse_idempotency_key(value: str | None, field: str = "Idempotency-Key") -> str | None:
    """An Idempotency-Key: 1 to 255 printable ASCII characters, or absent."""
    if value is None:
        return None
    if not (1 <= len(value) <= IDEMPOTENCY_KEY_MAX and value.isascii() and value.isprintable()):
        raise ValidationError("The idempotency key is not valid.", fields={
            field: [f"Must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters."]})
    return value
