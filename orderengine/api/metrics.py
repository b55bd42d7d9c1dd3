"""GET /metrics: the engine's figures in Prometheus text format; and the count of HTTP requests."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from orderengine import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    runtime = current_app.extensions["orderengine"]
    body, content_type = metrics.scrape(runtime.settings, runtime.store, request.headers.get("Accept"))
    return Response(body, content_type=content_type)


@bp.after_app_request
def count_request(response):
    rule = request.url_rule
    metrics.http_request(request.method, rule.rule if rule is not None else None, response.status_code)
    return response
