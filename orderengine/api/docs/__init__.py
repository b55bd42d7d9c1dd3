"""GET /openapi.json (the API document) and GET /docs (Swagger UI rendering it).

Every asset of /docs is served from here: the page, its initializer, and
Swagger UI's dist files from the swagger-ui-bundle package, so no request
leaves the host (the page's Content-Security-Policy says so to the browser).
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from orderengine.api.docs.document import build_document

bp = Blueprint("docs", __name__)

HERE = Path(__file__).resolve().parent
SWAGGER_UI_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
_DOCUMENT = "orderengine.openapi"


@bp.get("/openapi.json")
def openapi_document():
    """Built once per app (it depends only on the code and the auth mode)."""
    document = current_app.extensions.get(_DOCUMENT)
    if document is None:
        document = current_app.extensions[_DOCUMENT] = build_document(current_app)
    return jsonify(document)


@bp.get("/docs")
def docs_page():
    response = send_from_directory(HERE, "docs.html", max_age=0)
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    """Our initializer, and Swagger UI's own files: only those the page uses (anything else is a 404)."""
    if name == "docs.js":
        return send_from_directory(HERE, name, max_age=0)
    if name not in SWAGGER_UI_FILES:
        abort(404)
    return send_from_directory(swagger_ui_path, name, max_age=3600)
