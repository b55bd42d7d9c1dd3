"""A real headless Chromium for end-to-end tests of pages: Debian's /usr/bin/chromium driven by
the `playwright` package (never `playwright install`: nothing is downloaded).

Use it by importing the fixtures into a test module:

    from tests.e2e.browser import chromium, browser_page  # noqa: F401  (pytest fixtures)

`browser_page` is a fresh context (its own localStorage) and page that records every request,
WebSocket and console error, so a test can assert that nothing left the host and nothing broke.
Without Chromium (or playwright) the tests are skipped, unless CI=true: then they fail.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.harness import IN_CI, REPO

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 900}
ARTIFACTS = REPO / "var" / "test-artifacts"


def _unavailable(message: str):
    if IN_CI:
        pytest.fail(message + " (CI=true: the browser tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    """One browser per test module; each test gets its own context from `browser_page`."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class BrowserPage:
    """A page and what it did: every request URL, every WebSocket URL, every console error."""
    page: object
    requests: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        """host:port of every request and socket (data: and about: URLs have none)."""
        return {urlsplit(url).netloc for url in self.requests + self.websockets if urlsplit(url).netloc}

    def screenshot(self, tmp_path: Path, name: str) -> Path:
        """Save a full-page screenshot under tmp_path and copy it to var/test-artifacts/."""
        path = tmp_path / name
        self.page.screenshot(path=str(path), full_page=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, ARTIFACTS / name)
        return path


@pytest.fixture
def browser_page(chromium):
    context = chromium.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(15_000)
    page = context.new_page()
    recorded = BrowserPage(page)
    page.on("request", lambda request: recorded.requests.append(request.url))
    page.on("websocket", lambda ws: recorded.websockets.append(ws.url))
    page.on("console", lambda message: message.type == "error" and recorded.errors.append(message.text))
    page.on("pageerror", lambda error: recorded.errors.append(f"uncaught: {error}"))
    try:
        yield recorded
    finally:
        context.close()
