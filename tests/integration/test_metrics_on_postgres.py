"""The queue depth on PostgreSQL: accepted orders not yet submitted, counted when /metrics is scraped."""
from __future__ import annotations

import pytest

from tests.integration.watching import post_order, wait_for
from tests.scraping import Scrape

pytestmark = pytest.mark.integration


def queue_depth(client) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200
    return Scrape(response.get_data(as_text=True)).total("orderengine_queue_depth")


def test_queue_depth_counts_accepted_orders_until_a_worker_submits_them(client, fleet, runtime):
    ids = [post_order(client) for _ in range(4)]
    assert queue_depth(client) == 4  # no worker yet
    client.post(f"/api/orders/{ids[0]}/cancel")
    assert queue_depth(client) == 3  # a cancelled order is not queued
    fleet.worker(runtime)
    wait_for(lambda: queue_depth(client) == 0, timeout=60)
