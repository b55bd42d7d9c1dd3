"""Schemathesis reads /openapi.json and throws generated requests, valid and invalid, at every
operation of the app in-process (WSGI, SQLite, the real venue plugins): no answer may be a 5xx.
Bounded and derandomized, so it is the same run every time.

A random order id only ever finds nothing (404), so the operations on one order are also sent
the ids of real orders, placed before the run: one cancelled, one still pending, some confirmed
by a worker that is stopped again before the run starts.

The app is built when the module is imported: schemathesis' pytest integration needs the schema
at collection time (its fixture-based loader, `from_fixture`, fails on pytest 9, which no longer
has `Node._nodeid`; its state machine, which follows the document's links, never starts from
POST /api/orders/execute, so it would not reach real orders either).
"""
from __future__ import annotations

import atexit
import tempfile
import time

import schemathesis
from hypothesis import HealthCheck, settings, strategies as st
from schemathesis.checks import not_a_server_error

from orderengine.app import create_app
from orderengine.migrate import upgrade
from orderengine.runtime import Runtime
from orderengine.worker import EmbeddedWorker
from tests.conftest import make_settings

MAX_EXAMPLES = 200          # per operation: about 30 s for the ten operations on an idle machine
ORDER = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1"}
TERMINAL = {"confirmed", "failed", "cancelled"}


def _app_with_orders():
    """The engine on a SQLite file of its own, with the real venue plugins, and a few orders."""
    folder = tempfile.TemporaryDirectory(prefix="orderengine-fuzz-")
    atexit.register(folder.cleanup)
    database_url = f"sqlite:///{folder.name}/orderengine.db"
    upgrade(database_url)
    finished = _orders_a_worker_finished(make_settings(database_url=database_url))
    runtime = Runtime(make_settings(database_url=database_url))
    atexit.register(runtime.close)
    app = create_app(runtime.settings, runtime=runtime)
    cancelled = _place(app, clientOrderId="fuzz-cancelled")
    pending = _place(app, clientOrderId="fuzz-pending")
    assert app.test_client().post(f"/api/orders/{cancelled}/cancel").status_code == 200
    return app, [cancelled, pending, *finished]


def _orders_a_worker_finished(settings) -> list[str]:
    """Orders placed and run to their end by a worker of another runtime, gone before the run."""
    runtime = Runtime(settings)
    worker = EmbeddedWorker(runtime)
    worker.start()
    try:
        app = create_app(settings, runtime=runtime)
        finished = [_place(app, amountIn="0.5"), _place(app, tokenIn="USDC", tokenOut="SOL", amountIn="10")]
        deadline = time.monotonic() + 60
        while {runtime.store.get(o).status for o in finished} - TERMINAL:
            assert time.monotonic() < deadline, "the worker did not finish the orders in 60 s"
            time.sleep(0.05)
    finally:
        worker.stop()
        runtime.close()
    return finished


def _place(app, **changes) -> str:
    response = app.test_client().post("/api/orders/execute", json={**ORDER, **changes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["orderId"]


APP, ORDER_IDS = _app_with_orders()
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half the time, an order that exists (in each of its states) instead of a generated id."""
    if not path_parameters or "orderId" not in path_parameters:
        return st.just(path_parameters)
    real = st.sampled_from(ORDER_IDS).map(lambda order_id: {**path_parameters, "orderId": order_id})
    return st.one_of(st.just(path_parameters), real)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error])
