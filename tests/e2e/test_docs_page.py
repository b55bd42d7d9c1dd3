"""/docs in headless Chromium against a real `orderengine serve`: Swagger UI renders the API
document, every request the page makes stays on the server's host, try-it-out reaches the API,
and the Authorize button puts the bearer key on /api requests.

Chromium is Debian's /usr/bin/chromium driven through the `playwright` package (never
`playwright install`); without it these tests skip, except with CI=true, where they fail.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.e2e.browser import chromium  # noqa: F401  (pytest fixture: Debian's Chromium, one per module)
from tests.e2e.harness import Harness, clean_environ, free_port

pytestmark = pytest.mark.e2e

RENDER_TIMEOUT_MS = 30_000
API_KEY = "docs-test-key-0123456789"


def _serve(tmp_path_factory, **values):
    tmp_path = tmp_path_factory.mktemp("docs")
    harness = Harness(tmp_path)
    env = clean_environ(PORT=free_port(), DATABASE_URL=f"sqlite:///{tmp_path}/orderengine.db", **values)
    return harness, harness.serve(env)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    harness, server = _serve(tmp_path_factory)
    try:
        yield server
    finally:
        harness.close()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    harness, server = _serve(tmp_path_factory, AUTH="keys")
    try:
        yield server
    finally:
        harness.close()


class Page:
    """A browser tab on /docs that remembers every request it made."""

    def __init__(self, browser, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.requests, self.errors = [], []
        self.page.on("request", lambda request: self.requests.append(request))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.goto(base_url + "/docs")
        self.page.get_by_text("/api/orders/execute").first.wait_for(timeout=RENDER_TIMEOUT_MS)

    def try_out(self, operation_id: str, tag: str) -> str:
        """Expand an operation, press Try it out and Execute; return the status Swagger UI shows."""
        block = self.page.locator(f"#operations-{tag}-{operation_id}")
        block.locator(".opblock-summary").first.click()
        block.locator("button.try-out__btn").click()
        block.locator("button.execute").click()
        status = block.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=RENDER_TIMEOUT_MS)
        return status.inner_text().strip()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def docs(chromium, server):
    page = Page(chromium, server.base_url)
    yield page
    page.close()


def test_docs_page_renders_the_operations_with_every_request_to_this_host(docs, server):
    visible = docs.page.locator(".opblock-summary-path").all_inner_texts()

    assert {"/api/orders/execute", "/api/orders", "/api/orders/{orderId}", "/health"} <= \
        {text.replace("\u200b", "") for text in visible}
    origin = urlsplit(server.base_url)
    elsewhere = [r.url for r in docs.requests if urlsplit(r.url)[:2] != origin[:2]]
    assert not elsewhere, f"the docs page asked other hosts: {elsewhere}"
    assert not docs.errors, docs.errors     # e.g. our Content-Security-Policy refusing Swagger UI
    assert {urlsplit(r.url).path for r in docs.requests} >= {
        "/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json"}


def test_try_it_out_of_health_reaches_the_server(docs, server):
    status = docs.try_out("health", "system")

    assert status == "200"
    assert any(r.url == server.base_url + "/health" for r in docs.requests)
    assert all(urlsplit(r.url).netloc == urlsplit(server.base_url).netloc for r in docs.requests)


def test_authorize_puts_the_bearer_key_on_api_requests(chromium, keyed_server):
    docs = Page(chromium, keyed_server.base_url)
    try:
        docs.page.locator("button.authorize").first.click()
        modal = docs.page.locator(".modal-ux")
        modal.locator("input").first.fill(API_KEY)
        modal.locator("button.authorize").click()
        modal.locator("button.btn-done").click()

        docs.try_out("listVenues", "system")

        sent = [r for r in docs.requests if urlsplit(r.url).path == "/api/venues"]
        assert sent and sent[-1].headers.get("authorization") == f"Bearer {API_KEY}"
    finally:
        docs.close()
