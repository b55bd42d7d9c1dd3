"""Client input: what parse_order_request, parse_events_since and parse_order_id accept and reject."""
from __future__ import annotations

from decimal import Decimal

import pytest

from orderengine.errors import ValidationError
from orderengine.schemas import OrderRequest, parse_events_since, parse_order_id, parse_order_request
from orderengine.tokens import SOL, U64_MAX, USDC, USDT

ORDER_ID = "123e4567-e89b-12d3-a456-426614174000"


def order(**changes: object) -> dict:
    """A valid order body with `changes` applied; a change to `...` removes the field."""
    body = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def errors_for(payload: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_order_request(payload)
    return info.value


def assert_rejected(payload: object, field: str, *words: str) -> list[str]:
    """The payload is rejected under `field` alone, with readable messages containing `words`."""
    err = errors_for(payload)
    assert list(err.fields) == [field], err.fields
    messages = err.fields[field]
    assert messages and all(isinstance(m, str) and m.endswith(".") for m in messages)
    for word in words:
        assert any(word in m for m in messages), messages
    return messages


# --- valid orders -------------------------------------------------------------

def test_a_valid_order_with_every_field_is_parsed_into_an_order_request():
    parsed = parse_order_request(order(slippageBps=100, clientOrderId="my-order-1"))
    assert parsed == OrderRequest(type="MARKET", token_in=SOL, token_out=USDC, amount_in=Decimal("1.5"),
                                  slippage_bps=100, client_order_id="my-order-1")


def test_slippage_defaults_to_50_bps_and_client_order_id_to_none():
    parsed = parse_order_request(order())
    assert parsed.slippage_bps == 50
    assert parsed.client_order_id is None


def test_client_order_id_may_be_null():
    assert parse_order_request(order(clientOrderId=None)).client_order_id is None


@pytest.mark.parametrize("slippage", [0, 10_000])
def test_slippage_bounds_are_accepted(slippage):
    assert parse_order_request(order(slippageBps=slippage)).slippage_bps == slippage


def test_to_dict_uses_api_names_symbols_and_decimal_strings():
    parsed = parse_order_request(order(amountIn=2, clientOrderId="c1"))
    assert parsed.to_dict() == {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "2",
                                "slippageBps": 50, "clientOrderId": "c1"}


@pytest.mark.parametrize("amount, expected", [
    (1, Decimal("1")),
    ("1.5", Decimal("1.5")),
    (0.1, Decimal("0.1")),
    (1.25, Decimal("1.25")),
    ("0.000000001", Decimal("0.000000001")),
    (".5", Decimal("0.5")),
    ("1.50", Decimal("1.5")),
    ("1.000000000000", Decimal("1")),
    (1e-05, Decimal("0.00001")),
])
def test_amount_is_read_exactly_from_a_number_or_a_decimal_string(amount, expected):
    parsed = parse_order_request(order(amountIn=amount))
    assert parsed.amount_in == expected
    assert str(parsed.amount_in) == str(expected)


def test_a_float_amount_is_read_through_its_repr_not_its_binary_value():
    assert parse_order_request(order(amountIn=0.1)).amount_in.as_tuple() == Decimal("0.1").as_tuple()


def test_amount_keeps_its_integer_digits_without_an_exponent():
    assert str(parse_order_request(order(amountIn=100.0)).amount_in) == "100"


def test_the_largest_u64_amount_is_accepted():
    parsed = parse_order_request(order(amountIn="18446744073.709551615"))
    assert SOL.to_base(parsed.amount_in) == U64_MAX


@pytest.mark.parametrize("given, token", [
    ("SOL", SOL), ("sol", SOL), ("Sol", SOL), ("usdt", USDT),
    (SOL.mint, SOL), (USDT.mint, USDT),
])
def test_tokens_are_found_by_symbol_in_any_case_or_by_mint(given, token):
    other = "USDC" if token != USDC else "SOL"
    assert parse_order_request(order(tokenIn=given, tokenOut=other)).token_in == token


# --- missing and wrongly typed fields -----------------------------------------

@pytest.mark.parametrize("field", ["type", "tokenIn", "tokenOut", "amountIn"])
def test_each_required_field_is_reported_when_missing(field):
    assert assert_rejected(order(**{field: ...}), field) == ["Missing data for required field."]


@pytest.mark.parametrize("field", ["type", "tokenIn", "tokenOut", "amountIn", "slippageBps"])
def test_null_is_rejected_for_fields_that_need_a_value(field):
    assert_rejected(order(**{field: None}), field, "null")


@pytest.mark.parametrize("payload", [[], ["MARKET"], "order", 42, 1.5, True, None])
def test_a_payload_that_is_not_a_json_object_is_rejected(payload):
    err = errors_for(payload)
    assert err.fields == {"_schema": ["Invalid input type."]}


def test_the_whole_order_error_carries_a_summary_message():
    assert errors_for(order(type="LIMIT")).message == "The order is not valid."


@pytest.mark.parametrize("value", [1, ["MARKET"], {"type": "MARKET"}])
def test_type_must_be_a_string(value):
    assert_rejected(order(type=value), "type", "string")


@pytest.mark.parametrize("value", ["LIMIT", "market", "", " MARKET"])
def test_an_unsupported_order_type_is_rejected_listing_what_is_supported(value):
    assert_rejected(order(type=value), "type", "supported: MARKET")


# --- tokens -------------------------------------------------------------------

@pytest.mark.parametrize("field", ["tokenIn", "tokenOut"])
def test_an_unknown_token_is_rejected_listing_the_supported_ones(field):
    messages = assert_rejected(order(**{field: "BONK"}), field)
    assert messages == ["Unknown token 'BONK'; supported: SOL, USDC, USDT (or their mint addresses)."]


def test_a_mint_address_must_match_exactly():
    assert_rejected(order(tokenIn=SOL.mint.lower()), "tokenIn", "Unknown token")


@pytest.mark.parametrize("value", [1, ["SOL"], {"symbol": "SOL"}])
def test_a_token_must_be_a_string(value):
    assert_rejected(order(tokenIn=value), "tokenIn", "string")


@pytest.mark.parametrize("token_out", ["SOL", "sol", SOL.mint])
def test_the_same_token_on_both_sides_is_rejected_under_token_out(token_out):
    assert assert_rejected(order(tokenOut=token_out), "tokenOut") == ["tokenOut must differ from tokenIn."]


def test_an_echoed_unknown_token_is_cut_short():
    [message] = assert_rejected(order(tokenIn="X" * 5000), "tokenIn")
    assert len(message) < 200


# --- amounts ------------------------------------------------------------------

@pytest.mark.parametrize("amount", [0, 0.0, "0", "0.000", -1, -0.5, "-1.5"])
def test_an_amount_that_is_not_positive_is_rejected(amount):
    assert_rejected(order(amountIn=amount), "amountIn", "greater than 0")


@pytest.mark.parametrize("amount", [True, False])
def test_a_boolean_is_not_an_amount(amount):
    assert_rejected(order(amountIn=amount), "amountIn", "Not a valid amount")


@pytest.mark.parametrize("amount", [
    float("nan"), float("inf"), float("-inf"),
    "NaN", "nan", "Infinity", "-Infinity", "inf", "sNaN",
])
def test_nan_and_infinity_are_rejected_as_numbers_or_strings(amount):
    assert_rejected(order(amountIn=amount), "amountIn", "finite")


@pytest.mark.parametrize("amount", [
    "", " ", "abc", "1.5 SOL", " 1.5", "1.5\n", "0x10", "1e3", "1E-3", "1,5", "1_000", "١", [1], {"v": 1},
])
def test_an_amount_that_is_not_a_plain_decimal_is_rejected(amount):
    assert_rejected(order(amountIn=amount), "amountIn", "Not a valid amount")


@pytest.mark.parametrize("token, amount", [
    ("SOL", "1.0000000001"),
    ("USDC", "1.0000001"),
    ("USDT", 0.1234567),
    ("SOL", "0.1000000000000000000000000000000000000001"),
])
def test_an_amount_with_more_places_than_the_token_has_is_rejected_naming_the_token(token, amount):
    other = "SOL" if token != "SOL" else "USDC"
    decimals = {"SOL": 9, "USDC": 6, "USDT": 6}[token]
    [message] = assert_rejected(order(tokenIn=token, tokenOut=other, amountIn=amount), "amountIn")
    assert token in message and str(decimals) in message


@pytest.mark.parametrize("token, amount", [
    ("SOL", "18446744073.709551616"),
    ("USDC", "18446744073709.551616"),
    ("SOL", 10**30),
    ("SOL", 1e300),
])
def test_an_amount_over_u64_base_units_is_rejected_as_too_large(token, amount):
    other = "SOL" if token != "SOL" else "USDC"
    assert_rejected(order(tokenIn=token, tokenOut=other, amountIn=amount), "amountIn", "too large")


# --- slippage and client order id ---------------------------------------------

@pytest.mark.parametrize("slippage", [-1, 10_001, 10**9])
def test_slippage_out_of_range_is_rejected(slippage):
    assert_rejected(order(slippageBps=slippage), "slippageBps", "between 0 and 10000")


@pytest.mark.parametrize("slippage", [50.0, 50.5, True, False, "50", [50]])
def test_slippage_must_be_a_json_integer(slippage):
    assert_rejected(order(slippageBps=slippage), "slippageBps", "Not a valid integer")


def test_a_client_order_id_of_64_characters_is_accepted():
    assert parse_order_request(order(clientOrderId="x" * 64)).client_order_id == "x" * 64


@pytest.mark.parametrize("value", ["", "x" * 65])
def test_a_client_order_id_must_have_1_to_64_characters(value):
    assert_rejected(order(clientOrderId=value), "clientOrderId", "Length")


@pytest.mark.parametrize("value", [123, ["id"], {"id": 1}, True])
def test_a_client_order_id_must_be_a_string(value):
    assert_rejected(order(clientOrderId=value), "clientOrderId", "string")


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "nul\x00", "del\x7f"])
def test_a_client_order_id_must_not_contain_control_characters(value):
    assert_rejected(order(clientOrderId=value), "clientOrderId", "control characters")


# --- unknown fields and many errors at once -----------------------------------

def test_each_unknown_field_is_named():
    err = errors_for(order(foo=1, amount_in="1"))
    assert err.fields == {"foo": ["Unknown field."], "amount_in": ["Unknown field."]}


def test_every_problem_is_reported_in_one_error():
    err = errors_for({"type": "LIMIT", "tokenIn": "SOL", "tokenOut": "sol", "amountIn": "1.0000000001",
                      "slippageBps": -5, "clientOrderId": "", "extra": True})
    assert set(err.fields) == {"type", "tokenOut", "amountIn", "slippageBps", "clientOrderId", "extra"}


def test_missing_fields_and_bad_fields_are_reported_together():
    err = errors_for({"amountIn": "abc", "slippageBps": "high"})
    assert set(err.fields) == {"type", "tokenIn", "tokenOut", "amountIn", "slippageBps"}


# --- ?since= ------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (None, 0), ("0", 0), ("7", 7), ("007", 7), ("9" * 18, 10**18 - 1),
])
def test_since_is_a_non_negative_integer_defaulting_to_zero(value, expected):
    assert parse_events_since(value) == expected


@pytest.mark.parametrize("value", [
    "", " ", "-1", "+1", "1.0", "1e3", " 1", "1 ", "abc", "0x1", "1" * 19, "١",
])
def test_since_rejects_anything_but_plain_digits(value):
    with pytest.raises(ValidationError) as info:
        parse_events_since(value)
    assert list(info.value.fields) == ["since"]
    assert "non-negative integer" in info.value.fields["since"][0]


# --- order ids ----------------------------------------------------------------

@pytest.mark.parametrize("value", [ORDER_ID, ORDER_ID.upper(), "00000000-0000-0000-0000-000000000000"])
def test_an_order_id_is_a_uuid_returned_lower_cased(value):
    assert parse_order_id(value) == value.lower()


@pytest.mark.parametrize("value", [
    "", "abc", ORDER_ID.replace("-", ""), "{" + ORDER_ID + "}", "urn:uuid:" + ORDER_ID,
    ORDER_ID + " ", ORDER_ID[:-1] + "g", ORDER_ID + "0",
])
def test_an_order_id_that_is_not_a_canonical_uuid_is_rejected(value):
    with pytest.raises(ValidationError) as info:
        parse_order_id(value)
    assert list(info.value.fields) == ["orderId"]
    assert "UUID" in info.value.fields["orderId"][0]


def test_a_missing_order_id_is_reported_under_the_given_field_name():
    with pytest.raises(ValidationError) as info:
        parse_order_id(None, field="order")
    assert info.value.fields == {"order": ["Missing data for required field."]}
