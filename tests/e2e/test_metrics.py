"""Metrics in the production shape: gunicorn's /metrics sums its processes; a worker serves its own on METRICS_PORT."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.e2e.harness import ORDER, eventually, free_port
from tests.e2e.test_production import Stack
from tests.scraping import Scrape

pytestmark = pytest.mark.e2e

ROUND = 12        # orders POSTed at once, each on a connection of its own
MAX_ORDERS = 120  # give up if gunicorn never hands one of its processes an order


def post_fresh(url: str) -> str:
    """POST the order on a new connection (closed after), so either gunicorn process may take it."""
    response = requests.post(url + "/api/orders/execute", json=ORDER, headers={"Connection": "close"},
                             timeout=15, proxies={"http": None})
    assert response.status_code == 201, response.text
    return response.json()["orderId"]


def scrape(url: str) -> Scrape:
    response = requests.get(url, headers={"Connection": "close"}, timeout=15, proxies={"http": None})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(response.text)


def created_per_process(directory: Path, scratch: Path) -> dict[str, float]:
    """Orders each gunicorn process counted, read from its own file in the multiprocess directory."""
    counted = {}
    for file in directory.glob("counter_*.db"):
        alone = scratch / file.stem
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counted[file.stem] = registry.get_sample_value("orderengine_orders_created_total") or 0.0
    return counted


def test_gunicorn_metrics_sum_its_processes_and_a_worker_serves_its_own(pg_url, harness, private_redis_url,
                                                                        tmp_path):
    gunicorn_tmp = tmp_path / "gunicorn-tmp"  # where gunicorn makes its multiprocess directory
    gunicorn_tmp.mkdir()
    stack = Stack(harness, pg_url, private_redis_url, MOCK_EXEC_LATENCY_MS=300, WORKER_CONCURRENCY=4,
                  TMPDIR=str(gunicorn_tmp))
    metrics_port = free_port()
    harness.worker(dict(stack.env, METRICS_PORT=str(metrics_port)), wait_for=stack.worker_id)
    api = stack.api.base_url
    [directory] = gunicorn_tmp.glob("orderengine-metrics-*")

    ids: list[str] = []
    with ThreadPoolExecutor(8) as pool:
        while True:
            ids += pool.map(lambda _: post_fresh(api), range(ROUND))
            per_process = created_per_process(directory, tmp_path / "scratch")
            if sum(1 for n in per_process.values() if n > 0) >= 2 or len(ids) >= MAX_ORDERS:
                break
    assert len(per_process) == 2 and all(n > 0 for n in per_process.values()), per_process
    stack.api.wait_for_status(ids, {"confirmed"}, timeout=90)

    for _ in range(6):  # whichever process answers the scrape, it gives the sum
        summed = scrape(api + "/metrics")
        assert summed.total("orderengine_orders_created_total") == len(ids)
        assert summed.total("orderengine_http_requests_total", method="POST", route="/api/orders/execute",
                            status="2xx") == len(ids)
        assert summed.total("orderengine_order_events_total", status="confirmed") == 0  # the worker's
        assert summed.total("orderengine_queue_depth") == 0

    def worker_confirmed_all() -> bool:
        return scrape(f"http://127.0.0.1:{metrics_port}/metrics").total(
            "orderengine_order_events_total", status="confirmed") == len(ids)
    eventually(worker_confirmed_all, 10, "the worker's metrics do not show every order confirmed")
    own = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    assert own.total("orderengine_orders_created_total") == 0  # the API's
    for venue in own.labels("orderengine_quotes_total", "venue"):
        assert own.total("orderengine_quotes_total", venue=venue) == len(ids)  # one attempt each
    assert own.labels("orderengine_quotes_total", "venue") == {"raydium", "meteora"}
    for step in ("start_attempts", "route", "send", "settle", "confirm"):
        assert own.total("orderengine_step_seconds_count", step=step) >= 1, step
    assert own.total("orderengine_order_duration_seconds_count", status="confirmed") == len(ids)

    stack.api.proc.stop()
    assert not directory.exists()  # gunicorn made it, gunicorn removed it
