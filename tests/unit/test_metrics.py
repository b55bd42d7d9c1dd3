"""GET /metrics: what the engine counts, read back the way Prometheus reads it.

The metrics are the process's own (as in production), so every test compares a scrape
after with one before; the venues have names of their own per test.
"""
from __future__ import annotations

import socket
import threading
import urllib.request
import uuid

import pytest
from prometheus_client import generate_latest
from sqlalchemy.exc import OperationalError
from websockets.sync.client import connect
from werkzeug.serving import make_server

from orderengine import metrics
from orderengine.config import ConfigError
from orderengine.errors import NoRoute
from orderengine.lifecycle import Status
from orderengine.worker import EmbeddedWorker
from tests.conftest import make_settings
from tests.fakes import FakeVenue
from tests.scraping import Scrape
from tests.unit.conftest import SOL_USDC, wait_for, wait_terminal
from tests.unit.test_step_failures import place


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def venues():
    return [FakeVenue(unique("alpha"), price="150"), FakeVenue(unique("beta"), price="149")]


def scrape(client) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return Scrape(response.get_data(as_text=True))


def post_orders(client, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = client.post("/api/orders/execute", json=SOL_USDC)
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["orderId"])
    return ids


def test_metrics_count_orders_events_quotes_and_steps_of_confirmed_orders(client, runtime, worker, venues):
    before = scrape(client)
    ids = post_orders(client, 6)
    for order_id in ids:
        assert wait_terminal(runtime, order_id).status == "confirmed"
    after = scrape(client)

    assert after.minus(before, "orderengine_orders_created_total") == 6
    for status in ("pending", "routing", "building", "submitted", "confirmed"):
        assert after.minus(before, "orderengine_order_events_total", status=status) == 6, status
    assert after.minus(before, "orderengine_order_events_total", status="retrying") == 0
    for venue in venues:  # one attempt each: one quote per order from every venue
        assert after.total("orderengine_quotes_total", venue=venue.name) == 6
        assert after.total("orderengine_quotes_total", venue=venue.name, outcome="ok") == 6
        assert after.total("orderengine_venue_call_seconds_count", venue=venue.name, call="quotes") >= 1
    chosen = venues[0].name  # it pays more: every swap went there
    assert after.total("orderengine_venue_call_seconds_count", venue=chosen, call="execute_many") >= 1
    assert after.total("orderengine_venue_call_seconds_count", venue=chosen, call="statuses") >= 1
    assert after.total("orderengine_venue_call_seconds_count", venue=venues[1].name, call="execute_many") == 0
    # steps run per batch: at least one each, at most one per order
    for step in ("start_attempts", "fetch_quotes", "route", "send", "settle", "confirm"):
        assert 1 <= after.minus(before, "orderengine_step_seconds_count", step=step) <= 6, step
    assert after.minus(before, "orderengine_order_duration_seconds_count", status="confirmed") == 6
    assert after.minus(before, "orderengine_order_duration_seconds_sum", status="confirmed") > 0
    assert after.types["orderengine_step_seconds"] == "histogram"


def test_failed_attempts_are_counted_by_error_code_and_venue(client, runtime, start_engine):
    solo = FakeVenue(unique("solo"), fail_tx=1)
    broken = FakeVenue(unique("broken"), quote_error=NoRoute("no pool here"))
    rt = start_engine(solo, broken)
    before = scrape(client)
    order_id = place(rt, "1")
    assert wait_terminal(rt, order_id).status == "confirmed"
    after = scrape(client)

    assert after.minus(before, "orderengine_order_events_total", status="retrying") == 1
    assert after.minus(before, "orderengine_order_errors_total", status="retrying", code="TX_FAILED") == 1
    assert after.total("orderengine_venue_errors_total", venue=solo.name, call="statuses", code="TX_FAILED") == 1
    # two attempts: two quotes asked of each venue
    assert after.total("orderengine_quotes_total", venue=solo.name, outcome="ok") == 2
    assert after.total("orderengine_quotes_total", venue=broken.name, outcome="error") == 2
    assert after.total("orderengine_venue_errors_total", venue=broken.name, call="quotes", code="NO_ROUTE") == 2


def test_a_step_that_raises_is_counted_once_under_the_step_that_raised(client, start_engine):
    rt = start_engine(FakeVenue(unique("alpha")))
    writes = rt.store.transition_many

    def blinks_at_confirm(batch):  # the database fails the confirm's write: _confirm, inside _settle
        if any(c.target is Status.CONFIRMED for c in batch):
            raise OperationalError("UPDATE orders", {}, Exception("the database went away"))
        return writes(batch)

    rt.store.transition_many = blinks_at_confirm
    before = scrape(client)
    place(rt, "0.5")
    wait_for(lambda: scrape(client).minus(before, "orderengine_step_failures_total", step="confirm") >= 1)
    after = scrape(client)
    assert after.minus(before, "orderengine_step_failures_total", step="settle") == 0
    assert after.minus(before, "orderengine_step_failures_total") == after.minus(
        before, "orderengine_step_failures_total", step="confirm")


def test_step_time_leaves_out_the_steps_it_went_on_to(monkeypatch):
    outer, inner = unique("outer"), unique("inner")

    class Steps:
        @metrics.step(outer)
        def run_outer(self, batch):
            self.run_inner(batch)

        @metrics.step(inner)
        def run_inner(self, batch):
            pass

    clock = iter([0.0, 1.0, 4.0, 10.0])  # outer starts, inner starts, inner ends, outer ends
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    Steps().run_outer([1])
    monkeypatch.undo()
    text = Scrape(generate_latest(metrics.REGISTRY).decode())
    assert text.total("orderengine_step_seconds_sum", step=outer) == 7.0
    assert text.total("orderengine_step_seconds_sum", step=inner) == 3.0
    Steps().run_outer([])  # an empty batch is no step
    assert Scrape(generate_latest(metrics.REGISTRY).decode()).total(
        "orderengine_step_seconds_count", step=outer) == 1


def test_queue_depth_counts_orders_accepted_and_not_yet_submitted(client, runtime):
    assert scrape(client).total("orderengine_queue_depth") == 0
    ids = post_orders(client, 3)
    assert scrape(client).total("orderengine_queue_depth") == 3  # no worker yet: all pending
    worker = EmbeddedWorker(runtime)
    worker.start()
    try:
        for order_id in ids:
            wait_terminal(runtime, order_id)
        assert scrape(client).total("orderengine_queue_depth") == 0
    finally:
        worker.stop()


def test_http_requests_are_counted_by_method_route_and_status_class(client):
    before = scrape(client)
    client.get("/health")
    client.get("/no/such/page")
    client.post("/api/orders/execute", json={"type": "LIMIT"})
    after = scrape(client)
    assert after.minus(before, "orderengine_http_requests_total", method="GET", route="/health", status="2xx") == 1
    assert after.minus(before, "orderengine_http_requests_total", method="GET", route="unmatched",
                       status="4xx") == 1
    assert after.minus(before, "orderengine_http_requests_total", method="POST", route="/api/orders/execute",
                       status="4xx") == 1


@pytest.fixture
def served(app):
    """The app on a real socket (Werkzeug's server, in a thread), for WebSockets."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_websockets_open_goes_up_while_a_socket_is_open_and_down_when_it_closes(client, served):
    def open_sockets() -> float:
        return scrape(client).total("orderengine_websockets_open")

    before = open_sockets()
    with connect(f"ws://{served}/api/orders/stream", open_timeout=5, proxy=None):
        wait_for(lambda: open_sockets() == before + 1, timeout=5)
    wait_for(lambda: open_sockets() == before, timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_worker_serves_its_metrics_on_metrics_port_and_none_without_it():
    assert metrics.serve_worker_metrics(make_settings()) is None
    port = free_port()
    server = metrics.serve_worker_metrics(make_settings(metrics_port=port))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = Scrape(response.read().decode())
        assert {"orderengine_step_seconds", "orderengine_quotes", "orderengine_order_events"} <= set(text.types)
        with pytest.raises(ConfigError, match=f"METRICS_PORT {port}"):  # taken: start-up says so
            metrics.serve_worker_metrics(make_settings(metrics_port=port))
    finally:
        server.shutdown()
        server.server_close()


def test_a_scraper_that_asks_for_openmetrics_gets_it(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_the_grafana_dashboard_and_the_readme_ask_only_for_metrics_the_engine_exports(client):
    import json
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    exported = set(scrape(client).types)  # family names: counters without _total, histograms without suffixes
    dashboard = json.loads((repo / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    readme = (repo / "README.md").read_text()
    queries = re.search(r"```promql\n(.*?)```", readme, re.S).group(1)
    asked = set(re.findall(r"orderengine_[a-z_]+", " ".join(exprs) + queries))
    families = {re.sub(r"(_total|_bucket|_count|_sum)$", "", name) for name in asked}
    assert families and families <= exported, families - exported
    assert len(exprs) >= 10


def test_metrics_are_served_without_the_queue_depth_while_the_database_is_away(client, runtime, monkeypatch):
    def database_away():
        raise OSError("connection refused")

    monkeypatch.setattr(runtime.store, "count_unsubmitted", database_away)
    scraped = scrape(client)
    assert "orderengine_queue_depth" not in scraped.types
    assert "orderengine_orders_created" in scraped.types
