"""The yardstick for `bench intake`: a bare Flask app that parses the JSON body and answers 201.

No validation, no database, no queue: what Flask and gunicorn (gthread, the same
gunicorn.conf.py) cost for one POST on this machine. `gunicorn bench.bare_app:app`.
"""
from __future__ import annotations

import uuid

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/api/orders/execute")
def execute():
    body = request.get_json()
    order_id = str(uuid.uuid4())
    response = jsonify({"orderId": order_id, "status": "pending", "type": body.get("type")})
    response.status_code = 201
    response.headers["Location"] = f"/api/orders/{order_id}"
    return response


@app.get("/health")
def health():
    return {"status": "ok"}
