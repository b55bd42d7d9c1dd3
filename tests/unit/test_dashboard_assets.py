"""GET / serves the dashboard, and every file it loads comes from orderengine itself.

The page is tested in a real browser in tests/e2e/test_dashboard.py; this checks, fast and
without a browser, that each asset the page names (and each module a module imports) is
served, so a file missing from the package (setup.cfg package_data) shows up here.
"""
from __future__ import annotations

import re
from urllib.parse import urljoin

REFERENCE = re.compile(r'(?:src|href)="([^"]+)"')
IMPORT = re.compile(r'^import .* from "([^"]+)";$', re.MULTILINE)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"   # a name, not an address the page loads


def test_the_dashboard_is_served_at_the_root_with_a_policy_that_keeps_it_on_this_host(client):
    response = client.get("/")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "http" not in policy   # no other origin is allowed


def test_every_asset_and_module_the_page_loads_is_served_from_this_host(client):
    page = client.get("/").get_data(as_text=True)
    pending = REFERENCE.findall(page)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        assert ref.startswith("/"), f"{ref} is not served by orderengine"
        if ref in seen:
            continue
        seen.add(ref)
        response = client.get(ref)
        assert response.status_code == 200, ref
        if ref.endswith(".js"):
            assert response.mimetype in {"text/javascript", "application/javascript"}, ref
            body = response.get_data(as_text=True).replace(SVG_NAMESPACE, "")
            pending += [urljoin(ref, module) for module in IMPORT.findall(body)]
            assert "http://" not in body and "https://" not in body, f"{ref} names another host"
    assert {"/dashboard/static/js/main.js", "/dashboard/static/js/orders.js",
            "/dashboard/static/css/dashboard.css"} <= seen
