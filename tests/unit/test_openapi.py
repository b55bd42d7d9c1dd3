"""GET /openapi.json and GET /docs: a valid OpenAPI 3 document of every address the app serves,
generated from the schemas that validate requests, and a page that renders it from this host."""
from __future__ import annotations

import configparser
import fnmatch
import re
from pathlib import Path

import pytest
from flask import Flask
from openapi_spec_validator import validate

from orderengine.api.docs import CSP
from orderengine.api.docs.document import build_document
from orderengine.app import create_app
from orderengine.errors import EngineError, ExecutionError
from orderengine.runtime import Runtime
from orderengine.schemas import OrderRequestSchema, parse_order_request
from tests.fakes import FakeVenue, registry_of

REPO = Path(__file__).resolve().parents[2]


def _documentable(rule) -> bool:
    """Not static files (the app's or a blueprint's), nor /docs' own assets."""
    return not (rule.endpoint == "static" or rule.endpoint.endswith(".static")
                or rule.endpoint == "docs.docs_asset")


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    return response.get_json()


def _template(rule: str) -> str:
    """/api/orders/<order_id>/events -> /api/orders/{}/events (placeholders compared by position)."""
    return re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "{}", rule)


def _documented(document) -> set[tuple[str, str]]:
    return {(re.sub(r"\{[^}]+\}", "{}", path), method.upper())
            for path, operations in document["paths"].items() for method in operations}


def test_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "/"}]


def test_every_address_the_app_serves_is_in_the_document(app, document):
    served = {(_template(rule.rule), method) for rule in app.url_map.iter_rules()
              if _documentable(rule)
              for method in rule.methods - {"HEAD", "OPTIONS"}}

    missing = served - _documented(document)

    assert not missing, f"document these in orderengine/api/docs/document.py (_operations): {sorted(missing)}"


def test_every_address_in_the_document_is_served(app, document):
    served = {(_template(rule.rule), method) for rule in app.url_map.iter_rules()
              for method in rule.methods}

    assert _documented(document) <= served


def test_only_the_operations_an_app_serves_are_written_out(runtime):
    app = Flask(__name__)
    app.extensions["orderengine"] = runtime
    app.add_url_rule("/health", "health", lambda: "")
    app.add_url_rule("/metrics", "metrics", lambda: "")
    app.add_url_rule("/api/orders/<order_id>", "order", lambda order_id: "")

    document = build_document(app)

    assert {path: set(operations) for path, operations in document["paths"].items()} == {
        "/health": {"get"}, "/metrics": {"get"}, "/api/orders/{orderId}": {"get"}}


def test_order_body_is_the_validating_schema(document):
    body = document["paths"]["/api/orders/execute"]["post"]["requestBody"]["content"]["application/json"]
    schema = document["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    validating = OrderRequestSchema()

    assert set(schema["properties"]) == {f.data_key or name for name, f in validating.fields.items()}
    assert set(schema["required"]) == {f.data_key or name for name, f in validating.fields.items()
                                       if f.required}
    assert schema["additionalProperties"] is False             # unknown fields are rejected
    assert schema["properties"]["slippageBps"] == {"type": "integer", "default": 50,
                                                   "minimum": 0, "maximum": 10000}
    assert schema["properties"]["type"]["enum"] == ["MARKET"]
    assert {alt["type"] for alt in schema["properties"]["amountIn"]["anyOf"]} == {"string", "number"}
    parse_order_request(body["example"])                        # the example is an order we accept


def test_answers_document_amounts_as_decimal_strings(document):
    snapshot = document["components"]["schemas"]["Snapshot"]["properties"]
    for name in ("amountIn", "amountOut", "executedPrice"):
        assert snapshot[name]["type"] == "string" and snapshot[name]["format"] == "decimal"


def test_event_data_is_documented_for_every_status(document):
    event = document["components"]["schemas"]["Event"]
    statuses = event["properties"]["status"]["enum"]
    data = {ref["$ref"].rsplit("/", 1)[1] for ref in event["properties"]["data"]["anyOf"]}

    assert data == {f"{status.capitalize()}Data" for status in statuses}
    building = document["components"]["schemas"]["BuildingData"]["properties"]
    assert {"quotes", "venue", "expectedOut", "minAmountOut", "plan"} <= set(building)


def test_error_shape_lists_every_client_error_code(document):
    error = document["components"]["schemas"]["Error"]
    codes = {cls.code for cls in _subclasses(EngineError)
             if not issubclass(cls, ExecutionError) and cls.http_status < 500} | {"SERVICE_UNAVAILABLE"}

    assert error["required"] == ["error"]
    for code in codes | {"UNAUTHORIZED", "RATE_LIMITED", "OVERLOADED"}:
        assert code in error["description"]


def test_execute_documents_its_headers_and_every_refusal(document):
    post = document["paths"]["/api/orders/execute"]["post"]

    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    assert {"Location", "Idempotent-Replayed"} <= set(post["responses"]["201"]["headers"])
    assert {"400", "401", "409", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert "Retry-After" in post["responses"]["503"]["headers"]


def test_websockets_are_described_with_their_close_codes(document):
    for path in ("/api/orders/execute", "/api/orders/stream"):
        socket = document["paths"][path]["get"]
        assert set(socket["x-websocket"]["closeCodes"]) >= {"1000", "1013", "4400", "4401", "4404", "4429"}
        assert "426" in socket["responses"]


def test_api_operations_take_a_bearer_key_only_when_auth_is_keys(settings):
    def security(auth):
        runtime = Runtime(settings.replace(auth=auth), registry=registry_of(FakeVenue("alpha")))
        try:
            doc = create_app(runtime.settings, runtime=runtime).test_client().get("/openapi.json").get_json()
        finally:
            runtime.close()
        assert doc["components"]["securitySchemes"]["bearerAuth"] == {
            "type": "http", "scheme": "bearer",
            "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"]}
        return doc["paths"]["/api/orders"]["get"]["security"], doc["paths"]["/health"]["get"]["security"]

    assert security("keys") == ([{"bearerAuth": []}], [])
    assert security("off") == ([{}, {"bearerAuth": []}], [])


def test_docs_page_loads_every_asset_from_this_host(client):
    page = client.get("/docs")

    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CSP
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.get_data(as_text=True))
    assert assets and all(a.startswith("/docs/assets/") for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert client.get("/docs/assets/index.html").status_code == 404   # only the files the page uses


def test_docs_initializer_never_asks_the_public_validator(client):
    script = client.get("/docs/assets/docs.js").get_data(as_text=True)

    assert 'url: "/openapi.json"' in script
    assert "validatorUrl: null" in script


def test_every_non_python_file_of_the_package_is_declared_package_data():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    declared = {package: [p.strip() for p in patterns.replace("\n", ",").split(",") if p.strip()]
                for package, patterns in config["options.package_data"].items()}
    def is_declared(path: Path) -> bool:
        for package, patterns in declared.items():
            folder = REPO / package.replace(".", "/")
            if path.is_relative_to(folder) and any(
                    fnmatch.fnmatch(path.relative_to(folder).as_posix(), pattern) for pattern in patterns):
                return True
        return False

    undeclared = [path.relative_to(REPO).as_posix() for path in (REPO / "orderengine").rglob("*")
                  if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
                  and not is_declared(path)]
    assert not undeclared, f"add to setup.cfg [options.package_data]: {undeclared}"


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)
