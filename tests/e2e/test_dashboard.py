"""The dashboard at / in a real headless Chromium, against a real `orderengine serve`."""
from __future__ import annotations

import json
import re

import pytest

from tests.e2e.browser import browser_page, chromium  # noqa: F401  (pytest fixtures)
from tests.e2e.harness import clean_environ, eventually, free_port

try:
    from playwright.sync_api import expect
except ImportError:   # the chromium fixture skips these tests (fails them with CI=true)
    expect = None

pytestmark = pytest.mark.e2e

LIVE_MS = 9_000   # an order takes ~2 s; the page re-reads a quiet order only 10 s after its last event
IN_FLIGHT = re.compile(r"^(pending|routing|building|submitted)$")
DECIMAL = re.compile(r"^\d[\d,]*\.\d+$")


@pytest.fixture
def server(harness, tmp_path):
    """The all-in-one server; swaps take about 1.5 s, so an order can be seen in flight."""
    return harness.serve(clean_environ(PORT=free_port(), DATABASE_URL=f"sqlite:///{tmp_path}/orderengine.db",
                                       MOCK_EXEC_LATENCY_MS=1500))


@pytest.fixture(autouse=True)
def patient_expectations(chromium):
    expect.set_options(timeout=20_000)   # a loaded machine: an order may take a few seconds


def row_of(page, order_id: str):
    return page.locator(f'tbody.order[data-order-id="{order_id}"]')


def test_an_order_placed_in_the_form_goes_live_to_confirmed_and_opens_to_both_venues_quotes(
        server, browser_page, tmp_path):
    page = browser_page.page
    page.goto(server.base_url + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#orders-empty")).to_contain_text("No orders yet")

    # the server's validation, shown next to its field; nothing is placed
    page.fill("input[name=amountIn]", "1.2345678901")
    page.click("#submit-order")
    expect(page.locator('[data-error-for="amountIn"]')).to_contain_text("SOL has 9")
    assert server.get("/api/orders").json()["orders"] == []

    page.fill("input[name=amountIn]", "1.5")
    page.fill("input[name=clientOrderId]", "from-the-form")
    page.click("#submit-order")
    expect(page.locator('[data-error-for="amountIn"]')).to_be_empty()
    row = page.locator("tbody.order").first
    expect(row).to_contain_text("from-the-form")
    expect(row.locator(".order-row .badge")).to_have_text(IN_FLIGHT)       # there at once, in flight
    expect(row.locator(".order-row .badge")).to_have_text("confirmed", timeout=LIVE_MS)  # by the socket

    [order] = server.get("/api/orders").json()["orders"]
    assert order["clientOrderId"] == "from-the-form" and order["status"] == "confirmed"
    cells = row.locator(".order-row td")
    expect(cells.nth(4)).to_have_text(order["venue"].capitalize())
    assert order["amountOut"].startswith(cells.nth(6).inner_text().split()[0].replace(",", "")[:5])

    # an order placed by another client appears too, and goes to its end
    other = server.post_order(clientOrderId="from-elsewhere")
    expect(row_of(page, other).locator(".order-row .badge")).to_have_text("confirmed", timeout=LIVE_MS)
    expect(page.locator("tbody.order").first).to_contain_text("from-elsewhere")   # newest first

    # open the form's order: every venue's quote, the chosen one marked, the whole event log
    row_of(page, order["orderId"]).locator(".order-row").click()
    detail = row_of(page, order["orderId"]).locator(".detail")
    expect(detail.locator(".quotes tbody tr")).to_have_count(2)
    for venue in ("meteora", "raydium"):
        quote = detail.locator(f'.quotes tr[data-venue="{venue}"]')
        expect(quote).to_be_visible()
        assert DECIMAL.match(quote.locator("td").nth(3).inner_text())     # net out
    expect(detail.locator(".quotes tr.chosen")).to_have_attribute("data-venue", order["venue"])
    expect(detail.locator(".log-item")).to_have_count(5)
    expect(detail).to_contain_text(order["txHash"])

    # the venues' prices, side by side
    prices = page.locator("#venue-prices td.venue-price .mid")
    expect(prices.first).to_be_visible()
    assert prices.count() >= 4   # three pairs on two venues
    assert all(DECIMAL.match(text) for text in prices.all_inner_texts())
    expect(page.locator("#spread-chart polyline").first).to_be_attached()

    browser_page.screenshot(tmp_path, "dashboard.png")
    assert browser_page.hosts() == {server.base_url.split("//")[1]}, browser_page.requests
    assert any(url.endswith("/api/orders/stream") for url in browser_page.websockets)
    # the one error the console may show: the browser's own note of the 400 asked for above
    assert [e for e in browser_page.errors if "status of 400" not in e] == []
    assert len(browser_page.errors) <= 1


def test_a_401_asks_for_the_key_once_and_the_key_goes_on_every_request_and_the_socket(
        server, browser_page):
    """The server is made to enforce a key here (AUTH=keys comes with the auth branch)."""
    page = browser_page.page
    key = "oe_test_key_0123456789"
    refused, sent = [], []

    def http(route, request):
        if request.headers.get("authorization") == f"Bearer {key}":
            sent.append(request.url)
            route.continue_()
        else:
            refused.append(request.url)
            route.fulfill(status=401, content_type="application/json", body=json.dumps(
                {"error": {"code": "UNAUTHORIZED", "message": "A valid API key is needed."}}))

    def socket(ws):
        if f"apiKey={key}" in ws.url:
            ws.connect_to_server()
        else:
            ws.close(code=4401, reason="UNAUTHORIZED")

    page.route(re.compile(r"/api/"), http)
    page.route_web_socket(re.compile(r"/api/orders/stream"), socket)
    page.goto(server.base_url + "/")

    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "key")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    expect(dialog).to_be_hidden()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#orders-empty")).to_contain_text("No orders yet")
    expect(page.locator("#venue-prices td.venue-price").first).to_be_visible()
    expect(page.locator("#key-hint")).to_have_text("••••6789")
    assert page.evaluate("localStorage.getItem('orderengine.apiKey')") == key
    assert any(f"apiKey={key}" in url for url in browser_page.websockets)

    # placing an order sends it too
    page.fill("input[name=amountIn]", "0.5")
    page.click("#submit-order")
    expect(page.locator("tbody.order .order-row .badge").first).to_have_text("confirmed")
    assert any(url.endswith("/api/orders/execute") for url in sent)

    # a reload uses the kept key: no question, nothing refused
    refused.clear()
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("tbody.order")).to_have_count(1)
    expect(dialog).to_be_hidden()
    assert refused == []

    # forgetting it: gone from the browser, and the next request asks again
    page.click("#forget-key")
    expect(dialog).to_be_visible()
    assert page.evaluate("localStorage.getItem('orderengine.apiKey')") is None
    page.click("#key-cancel")
    expect(dialog).to_be_hidden()
    expect(page.locator("#enter-key")).to_be_visible()
    expect(page.locator("#orders-empty")).to_contain_text("API key")
    assert browser_page.hosts() == {server.base_url.split("//")[1]}
    assert [e for e in browser_page.errors if "status of 401" not in e and "4401" not in e] == []


def test_after_the_socket_drops_it_reconnects_and_shows_what_happened_meanwhile(server, browser_page):
    page = browser_page.page
    state = {"up": True, "routes": []}

    def socket(ws):
        if state["up"]:
            ws.connect_to_server()
            state["routes"].append(ws)
        else:
            ws.close(code=1011, reason="down")

    page.route_web_socket(re.compile(r"/api/orders/stream"), socket)
    page.goto(server.base_url + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    state["up"] = False
    state["routes"][-1].close(code=1011, reason="dropped")
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    missed = [server.post_order(clientOrderId=f"while-away-{i}") for i in range(2)]
    server.wait_for_status(missed, {"confirmed"}, timeout=20)
    assert page.locator("tbody.order").count() == 0   # nothing arrived while the socket was away

    state["up"] = True
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    for order_id in missed:
        expect(row_of(page, order_id).locator(".order-row .badge")).to_have_text("confirmed")
    eventually(lambda: len(state["routes"]) >= 2, 5, "the page did not open a second socket")
