"""Hostile input to POST /api/orders/execute and the stream socket's submit: every answer is a 4xx
in the one error shape, never a 5xx, and nothing is stored (no order, event or idempotency key)."""
import json
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from orderengine.app import create_app
from orderengine.intake import submit_order
from orderengine.migrate import upgrade
from orderengine.runtime import Runtime
from orderengine.models import idempotency_keys, order_events, orders
from orderengine.stream import StreamSession
from tests.conftest import make_settings
from tests.fakes import FakeVenue, registry_of

BASE = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "slippageBps": 50,
        "clientOrderId": "bot-1"}
FIELDS = list(BASE)
KIB_64 = 64 * 1024

#: JSON literals (raw text) put in place of one field's value
HOSTILE_VALUES = [
    "null", "true", "false", "[]", "{}", "[1, 2]", '{"a": 1}', '{"a": {"b": [null]}}',
    "0", "-0", "-0.0", "-1", "1e400", "-1e400", "1E-400", "1e3", "NaN", "-NaN", "Infinity", "-Infinity",
    "1" + "0" * 30, "9" * 5000, "0.0000000000000000000000000001", "18446744073709551616",
    '"NaN"', '"Infinity"', '"1e3"', '"0x10"', '""', '" "', '" 1"', '"1,5"',
    r'"\ud800"', r'"\udfff\ud800"', r'"SOL\ud800"', r'"\u0000"', r'"SOL\u0000"', r'"\u200fSOL"',
    r'"\u202eLOS"', r'"\u200f"', r'"e\u0301"', r'"\ufeffSOL"', r'"S\u200bOL"', r'"\u0085"', r'"a\nb"',
    '"' + "x" * 65 + '"', '"' + "\u00e9" * 70 + '"', '"' + "x" * (KIB_64 - 300) + '"',
]
#: (field, literal) pairs that make valid orders, the only ones answered 201: a JSON number may
#: have an exponent (1e3 SOL is 1000 SOL), and a clientOrderId is any printable NFC text
VALID = {("slippageBps", "0"), ("slippageBps", "-0"), ("clientOrderId", "null"), ("amountIn", "1e3"),
         *(("clientOrderId", v) for v in ('"NaN"', '"Infinity"', '"1e3"', '"0x10"', '" "', '" 1"', '"1,5"'))}


def with_value(field: str, literal: str) -> str:
    """BASE as JSON text with `field`'s value replaced by the raw `literal`."""
    return json.dumps({**BASE, field: "@@"}).replace('"@@"', literal)


WHOLE_BODIES = {
    "deep nesting, 100k levels (over 64 KiB)": "[" * 100_000 + "]" * 100_000,
    "deep nesting under 64 KiB": "[" * 30_000 + "]" * 30_000,
    "deep object nesting": '{"a":' * 10_000 + "1" + "}" * 10_000,
    "deep nesting in a field": with_value("amountIn", "[" * 20_000 + "]" * 20_000),
    "a key twice, same value": '{"type": "MARKET", "type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", '
                               '"amountIn": "1"}',
    "a key twice, two amounts": '{"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", '
                                '"amountIn": "1000"}',
    "a key twice in a nested object": with_value("clientOrderId", '{"a": 1, "a": 2}'),
    "an array": "[]", "a string": '"MARKET"', "a number": "1", "null": "null", "true": "true",
    "empty": "", "whitespace": "   ", "truncated": '{"type": "MARKET"', "trailing garbage": json.dumps(BASE) + " x",
    "two documents": json.dumps(BASE) + json.dumps(BASE), "a BOM": "\ufeff" + json.dumps(BASE),
    "an unknown field with a huge name": json.dumps({**BASE, "x" * 60_000: 1}),
    "many unknown fields": json.dumps({**BASE, **{f"f{i}": i for i in range(3000)}}),
    "a lone surrogate as a key": with_value("clientOrderId", "1").replace('"clientOrderId"', r'"\ud800"'),
    "huge string just under 64 KiB": with_value("clientOrderId", '"' + "x" * (KIB_64 - 200) + '"'),
    "huge string just over 64 KiB": with_value("clientOrderId", '"' + "x" * KIB_64 + '"'),
    "NaN alone": "NaN",
}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """One engine for the whole module (hundreds of cases; each compares what is stored
    before and after itself), no worker: an order accepted stays pending."""
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile')}/orderengine.db"
    upgrade(url)
    rt = Runtime(make_settings(database_url=url, rate_limit_per_minute=100_000),
                 registry=registry_of(FakeVenue("alpha", price="150")))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def client(runtime):
    return create_app(runtime.settings, runtime=runtime).test_client()


def stored(runtime) -> tuple[int, int, int]:
    with runtime.engine.connect() as conn:
        return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                     for t in (orders, order_events, idempotency_keys))


def assert_refused(response, runtime, before) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:300])
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"]["code"], str) and body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "fields"}
    assert stored(runtime) == before


def post(client, data, content_type="application/json", **headers):
    return client.post("/api/orders/execute", data=data, content_type=content_type, headers=headers)


@pytest.mark.parametrize("literal", HOSTILE_VALUES, ids=lambda v: v[:24])
@pytest.mark.parametrize("field", FIELDS)
def test_a_hostile_value_in_any_field_is_a_4xx_and_stores_nothing(client, runtime, field, literal):
    before = stored(runtime)
    response = post(client, with_value(field, literal).encode("utf-8", "surrogatepass"),
                    **{"Idempotency-Key": uuid.uuid4().hex})
    if (field, literal) in VALID:
        assert response.status_code == 201
    else:
        assert_refused(response, runtime, before)


@pytest.mark.parametrize("name", list(WHOLE_BODIES))
def test_a_hostile_body_is_a_4xx_and_stores_nothing(client, runtime, name):
    before = stored(runtime)
    response = post(client, WHOLE_BODIES[name].encode("utf-8", "surrogatepass"), **{"Idempotency-Key": uuid.uuid4().hex})
    assert_refused(response, runtime, before)
    if "twice" in name:
        assert response.status_code == 400 and "Duplicate key" in response.get_data(as_text=True)


@pytest.mark.parametrize("content_type, data", [
    ("text/plain", json.dumps(BASE)),
    ("application/x-www-form-urlencoded", "type=MARKET&tokenIn=SOL"),
    ("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n"),
    ("", json.dumps(BASE)),
    ("application/json", b'{"type": "MARKET", "tokenIn": "\xff\xfe", "tokenOut": "USDC", "amountIn": "1"}'),
    ("application/json", json.dumps({**BASE, "clientOrderId": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")),
    ("application/json; charset=utf-16", json.dumps(BASE).encode("utf-16")),
    ("application/json", b"\xc0\xaf\xed\xa0\x80"),
], ids=["text", "form", "multipart", "none", "invalid utf-8", "latin-1", "utf-16", "overlong and surrogate utf-8"])
def test_a_body_that_is_not_utf8_json_is_a_415_and_stores_nothing(client, runtime, content_type, data):
    before = stored(runtime)
    response = post(client, data, content_type=content_type)
    assert response.status_code == 415
    assert_refused(response, runtime, before)


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "\u202e", "\x7f"])
def test_a_hostile_idempotency_key_is_a_400_and_stores_nothing(client, runtime, key):
    before = stored(runtime)
    response = client.post("/api/orders/execute", json=BASE, headers=[("Idempotency-Key", key)])
    assert response.status_code == 400
    assert_refused(response, runtime, before)


# --- the stream socket's submit ---------------------------------------------------------------

class Session:
    def __init__(self, runtime):
        self.sent: list[dict] = []
        self.sub = runtime.bus.open()
        self.session = StreamSession(runtime.store, self.sub, lambda order, key: submit_order(runtime, order, key),
                                     lambda text: self.sent.append(json.loads(text)))

    def say(self, raw) -> dict:
        """The answer to one message (an accepted submit's events follow it)."""
        before = len(self.sent)
        self.session.on_message(raw)
        replies = [m for m in self.sent[before:] if "type" in m]
        assert len(replies) == 1, replies
        return replies[0]


@pytest.fixture
def session(runtime):
    s = Session(runtime)
    yield s
    s.sub.close()


def assert_error_reply(reply, runtime, before) -> None:
    assert reply["type"] == "error", reply
    assert reply["error"]["code"] not in {"SERVICE_UNAVAILABLE", "INTERNAL_ERROR"}, reply
    assert reply["error"]["message"] and set(reply["error"]) <= {"code", "message", "fields"}
    assert stored(runtime) == before


def submit_text(order_text: str, key: str | None = None, request_id: str = "1") -> str:
    key = key if key is not None else json.dumps(uuid.uuid4().hex)
    return f'{{"action": "submit", "requestId": {request_id}, "idempotencyKey": {key}, "order": {order_text}}}'


@pytest.mark.parametrize("literal", HOSTILE_VALUES, ids=lambda v: v[:24])
@pytest.mark.parametrize("field", FIELDS)
def test_a_hostile_value_in_a_stream_submit_is_an_error_message_and_stores_nothing(runtime, session, field, literal):
    before = stored(runtime)
    reply = session.say(submit_text(with_value(field, literal)))
    if (field, literal) in VALID:
        assert reply["type"] == "accepted"
    else:
        assert_error_reply(reply, runtime, before)


@pytest.mark.parametrize("name", [n for n in WHOLE_BODIES if "64 KiB" not in n])
def test_a_hostile_order_in_a_stream_submit_is_an_error_message_and_stores_nothing(runtime, session, name):
    before = stored(runtime)
    text = WHOLE_BODIES[name]
    for message in (submit_text(text) if text.strip() else submit_text("null"), text):
        assert_error_reply(session.say(message.encode("utf-8", "surrogatepass")), runtime, before)


@pytest.mark.parametrize("literal", ['""', '"' + "x" * 256 + '"', "1", "true", "[]", "{}",
                                     r'"\ud800"', r'"\u0000"', r'"caf\u00e9"', "1e400", "NaN"])
def test_a_hostile_idempotency_key_in_a_stream_submit_stores_nothing(runtime, session, literal):
    before = stored(runtime)
    assert_error_reply(session.say(submit_text(json.dumps(BASE), key=literal)), runtime, before)


@pytest.mark.parametrize("literal", ['"' + "x" * 129 + '"', "true", "[]", "{}", "1.5", "1e400", "NaN", "-Infinity",
                                     "9" * 200])
def test_a_request_id_that_is_not_a_short_string_or_an_integer_stores_nothing(runtime, session, literal):
    """(requestId is the client's own token, echoed as sent: any string or integer of at most 128
    characters, odd unicode included, is fine)"""
    before = stored(runtime)
    assert_error_reply(session.say(submit_text(json.dumps(BASE), request_id=literal)), runtime, before)


def test_non_utf8_bytes_on_the_stream_are_an_error_message(runtime, session):
    before = stored(runtime)
    assert_error_reply(session.say(b'{"action": "submit", "order": "\xff"}'), runtime, before)


# --- a property: whatever the body, no 5xx, and nothing stored unless 201 ----------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=20) | st.sampled_from(
    ["MARKET", "SOL", "USDC", "USDT", "1", "0.5", "-1", "\u200fSOL", "e\u0301", "\x00"])
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str) | TEXT)
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(FIELDS) | TEXT, inner, max_size=4), max_leaves=10)
BODIES = (st.fixed_dictionaries({}, optional={f: JSONISH for f in FIELDS})
          | st.builds(lambda base, field, value: {**base, field: value},
                      st.just(BASE), st.sampled_from(FIELDS), JSONISH)
          | JSONISH)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_no_body_gets_a_5xx_and_a_refused_body_stores_nothing(client, runtime, body):
    before = stored(runtime)
    text = json.dumps(body, allow_nan=True, default=str)
    response = post(client, text.encode("utf-8", "surrogatepass"))
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    if response.status_code == 201:
        assert stored(runtime)[0] == before[0] + 1
    else:
        assert_refused(response, runtime, before)
