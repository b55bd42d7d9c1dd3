"""AUTH=keys through the app: no key, an unknown or a revoked one is a 401; a caller sees
only its own orders (another's answers exactly as a missing one); keys are per caller."""
import json
import uuid

import pytest
import sqlalchemy as sa

from orderengine.keys import ApiKeys
from orderengine.migrate import upgrade
from orderengine.models import orders
from tests.conftest import make_settings
from tests.unit.conftest import SOL_USDC
from tests.unit.test_api import order_count, post


@pytest.fixture
def settings(sqlite_url):
    upgrade(sqlite_url)
    return make_settings(database_url=sqlite_url, auth="keys")


@pytest.fixture
def keys(runtime):
    return ApiKeys(runtime.engine)


@pytest.fixture
def alice(keys):
    return {"Authorization": f"Bearer {keys.create('alice')}"}


@pytest.fixture
def bob(keys):
    return {"Authorization": f"Bearer {keys.create('bob')}"}


def place(client, headers, body=SOL_USDC, **kw) -> str:
    response = post(client, body, headers=headers, **kw)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["orderId"]


def assert_unauthorized(response, invalid_token: bool):
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "UNAUTHORIZED"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) is invalid_token


def test_a_request_without_a_key_is_a_401_and_stores_nothing(client, runtime):
    assert_unauthorized(post(client, SOL_USDC), invalid_token=False)
    assert order_count(runtime) == 0


@pytest.mark.parametrize("header", [
    "Bearer oe_" + "A" * 43,            # well formed, never issued
    "Bearer not-a-key",
    "Bearer ",
    "Basic YWxpY2U6c2VjcmV0",
    "oe_" + "A" * 43,                   # no scheme
])
def test_an_unknown_or_malformed_key_is_a_401(client, runtime, header):
    response = post(client, SOL_USDC, headers={"Authorization": header})
    assert_unauthorized(response, invalid_token=header.startswith("Bearer ") and header.strip() != "Bearer")
    assert order_count(runtime) == 0


def test_a_valid_key_places_an_order_owned_by_the_keys_name(client, runtime, alice):
    order_id = place(client, alice)
    assert client.get(f"/api/orders/{order_id}", headers=alice).get_json()["status"] == "pending"
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(orders.c.owner).where(orders.c.id == order_id)).scalar() == "alice"


def test_a_revoked_key_is_refused_on_the_very_next_request(client, keys, alice):
    assert client.get("/api/orders", headers=alice).status_code == 200
    keys.revoke("alice")
    assert_unauthorized(client.get("/api/orders", headers=alice), invalid_token=True)


def test_the_key_is_not_taken_from_the_url_of_a_plain_http_request(client, alice):
    key = alice["Authorization"].split()[1]
    assert_unauthorized(client.get(f"/api/orders?apiKey={key}"), invalid_token=False)


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/venues"), ("GET", "/api/orders"), ("GET", f"/api/orders/{uuid.uuid4()}"),
    ("GET", f"/api/orders/{uuid.uuid4()}/events"), ("POST", f"/api/orders/{uuid.uuid4()}/cancel"),
    ("POST", "/api/orders/execute"), ("GET", "/api/no-such-thing"), ("GET", "/api"),
])
def test_every_request_under_api_needs_a_key(client, method, path):
    assert_unauthorized(client.open(path, method=method), invalid_token=False)


def test_health_needs_no_key(client):
    assert client.get("/health").status_code == 200


# --- isolation -----------------------------------------------------------------------------

def not_found_body(client, headers, order_id, suffix=""):
    """What a caller is told about an order id that does not exist at all."""
    missing = str(uuid.uuid4())
    method = "POST" if suffix == "/cancel" else "GET"
    response = client.open(f"/api/orders/{missing}{suffix}", method=method, headers=headers)
    assert response.status_code == 404
    return json.loads(response.get_data(as_text=True).replace(missing, order_id))


@pytest.mark.parametrize("method,suffix", [("GET", ""), ("GET", "/events"), ("POST", "/cancel")])
def test_another_keys_order_answers_exactly_as_a_missing_one(client, runtime, alice, bob, method, suffix):
    order_id = place(client, alice)
    response = client.open(f"/api/orders/{order_id}{suffix}", method=method, headers=bob)
    assert response.status_code == 404
    assert response.get_json() == not_found_body(client, bob, order_id, suffix)
    assert response.get_json()["error"]["code"] == "ORDER_NOT_FOUND"
    assert runtime.store.get(order_id).status == "pending"  # bob's cancel changed nothing
    assert client.open(f"/api/orders/{order_id}{suffix}", method=method, headers=alice).status_code == 200


def test_the_list_shows_only_the_callers_orders_page_by_page(client, alice, bob):
    mine = [place(client, alice) for _ in range(3)]
    theirs = place(client, bob)
    seen, cursor = [], None
    while True:
        page = client.get("/api/orders", query_string={"limit": 2, **({"before": cursor} if cursor else {})},
                          headers=alice).get_json()
        seen += [o["orderId"] for o in page["orders"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == mine[::-1]
    assert [o["orderId"] for o in client.get("/api/orders", headers=bob).get_json()["orders"]] == [theirs]


def test_an_idempotency_key_is_scoped_to_its_caller(client, runtime, alice, bob):
    first = post(client, SOL_USDC, headers={**alice, "Idempotency-Key": "same"})
    other = post(client, SOL_USDC, headers={**bob, "Idempotency-Key": "same"})
    again = post(client, SOL_USDC, headers={**alice, "Idempotency-Key": "same"})
    assert first.status_code == other.status_code == again.status_code == 201
    assert other.get_json()["orderId"] != first.get_json()["orderId"]
    assert "Idempotent-Replayed" not in other.headers
    assert again.get_json()["orderId"] == first.get_json()["orderId"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert order_count(runtime) == 2
    assert client.get(f"/api/orders/{other.get_json()['orderId']}", headers=alice).status_code == 404


def test_a_key_that_cannot_be_checked_is_a_503_not_a_500(client, runtime, app, alice):
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE api_keys"))  # the lookup's statement fails
    response = client.get("/api/orders", headers=alice)
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    app.extensions["orderengine.auth"].keys = ApiKeys(sa.create_engine(  # the database cannot be reached
        "postgresql+psycopg://nobody@127.0.0.1:1/gone", connect_args={"connect_timeout": 1}))
    response = client.get("/api/orders", headers=alice)
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
