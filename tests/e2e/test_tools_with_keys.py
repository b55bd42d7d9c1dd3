"""The operator's tools against a real `orderengine serve` with AUTH=keys and a key made by
`orderengine keys create`: the CLI with --key and ORDERENGINE_KEY, the dashboard (asks once,
keeps the key, goes live), and the pages and scrapes that need no key."""
from __future__ import annotations

import subprocess

import pytest

from tests.e2e.browser import browser_page, chromium  # noqa: F401  (pytest fixtures)
from tests.e2e.harness import ORDERENGINE, clean_environ, free_port
from tests.e2e.test_client import cli, event_statuses

try:
    from playwright.sync_api import expect
except ImportError:   # the chromium fixture skips the browser test (fails it with CI=true)
    expect = None

pytestmark = pytest.mark.e2e


@pytest.fixture
def keyed(harness, tmp_path):
    """(server, key): AUTH=keys, one key made with the real command."""
    env = clean_environ(PORT=free_port(), DATABASE_URL=f"sqlite:///{tmp_path}/orderengine.db", AUTH="keys")
    server = harness.serve(env)
    made = subprocess.run([ORDERENGINE, "keys", "create", "ops"], env=env, cwd=harness.cwd,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return server, made.stdout.splitlines()[-1]


def test_the_cli_needs_the_key_and_works_with_it(keyed, tmp_path):
    server, key = keyed

    refused = cli("order", "SOL", "USDC", "1", url=server.base_url, cwd=tmp_path)
    by_flag = cli("order", "SOL", "USDC", "1", "--key", key, url=server.base_url, cwd=tmp_path)
    by_env = cli("orders", url=server.base_url, cwd=tmp_path, ORDERENGINE_KEY=key)

    assert refused.returncode == 2 and "UNAUTHORIZED" in refused.stderr and "--key" in refused.stderr
    assert by_flag.returncode == 0, by_flag.stderr
    assert event_statuses(by_flag.stdout)[-1] == "confirmed"
    assert by_env.returncode == 0 and "confirmed" in by_env.stdout
    assert key not in by_flag.stdout + by_flag.stderr + by_env.stdout + by_env.stderr


def test_pages_and_scrapes_need_no_key_but_the_api_does(keyed):
    server, _ = keyed

    for path in ("/", "/docs", "/openapi.json", "/metrics", "/health"):
        assert server.get(path).status_code == 200, path
    refused = server.get("/api/orders")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"


def test_the_dashboard_asks_for_the_key_once_and_goes_live_with_it(keyed, browser_page):
    server, key = keyed
    page = browser_page.page
    expect.set_options(timeout=20_000)

    page.goto(server.base_url + "/")
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    page.fill("input[name=amountIn]", "0.7")
    page.click("#submit-order")
    expect(page.locator("tbody.order .order-row .badge").first).to_have_text("confirmed")

    page.reload()   # the key is kept: no second question
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("tbody.order")).to_have_count(1)
