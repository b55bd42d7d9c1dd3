"""GET /: the dashboard, a page for a person watching orders (README "Dashboard").

Hand-written HTML, CSS and JavaScript modules in this package, no build step and
nothing fetched from elsewhere: the Content-Security-Policy below lets the page
load and connect to this origin only, so a stray CDN link would fail loudly in
the browser (and in tests/e2e/test_dashboard.py) rather than quietly leak.
The page talks to the public API like any other client; it has no API of its own.
"""
from __future__ import annotations

from flask import Blueprint, make_response, render_template

bp = Blueprint("dashboard", __name__, static_folder="static", static_url_path="/dashboard/static",
               template_folder="templates")

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@bp.get("/")
def index():
    response = make_response(render_template("dashboard/index.html"))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
