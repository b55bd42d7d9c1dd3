"""The production shape: `orderengine migrate`, gunicorn, and `orderengine worker`s on PostgreSQL + Redis."""
from __future__ import annotations

import collections
import datetime as dt
import socket
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from tests.e2e.harness import ORDER, Harness, clean_environ, eventually, free_port, parse_at

pytestmark = pytest.mark.e2e

LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]
HOST = socket.gethostname()


class Stack:
    """One deployment for a test: its environment, database, API server and workers."""

    def __init__(self, harness: Harness, pg_url: str, redis_url: str, **values) -> None:
        self.harness = harness
        self.pg_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.env = clean_environ(DATABASE_URL=pg_url, REDIS_URL=redis_url, HOST="127.0.0.1",
                                 PORT=free_port(), WEB_CONCURRENCY=2, **values)
        harness.migrate(self.env)
        self.api = harness.gunicorn(self.env)

    def worker(self):
        return self.harness.worker(self.env, wait_for=self.worker_id)

    # what the database says

    def query(self, sql: str, *params):
        with psycopg.connect(self.pg_url, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def worker_id(self, pid: int) -> str | None:
        """The id under which the worker process `pid` beats its heartbeat (None: not up yet)."""
        rows = self.query("SELECT id FROM workers WHERE host = %s AND pid = %s", HOST, pid)
        return rows[0][0] if rows else None

    def statuses(self, order_ids) -> dict[str, str]:
        return dict(self.query("SELECT id, status FROM orders WHERE id = ANY(%s)", list(order_ids)))

    def owners(self, order_ids) -> dict[str, str | None]:
        return dict(self.query("SELECT id, work_owner FROM orders WHERE id = ANY(%s)", list(order_ids)))

    def order_count(self) -> int:
        return self.query("SELECT count(*) FROM orders")[0][0]

    def confirmed_txs(self) -> dict[str, list[str]]:
        """order id -> signatures of its confirmed transactions on the simulated chain
        (client tx ids are `<venue>:<order id>:<attempt>`)."""
        filled: dict[str, list[str]] = {}
        for client_tx_id, signature in self.query(
                "SELECT client_tx_id, signature FROM sim_transactions WHERE status = 'confirmed'"):
            filled.setdefault(client_tx_id.split(":")[1], []).append(signature)
        return filled

    def assert_filled_once(self, snapshots: dict[str, dict]) -> None:
        confirmed = self.confirmed_txs()
        for order_id, snapshot in snapshots.items():
            assert snapshot["status"] == "confirmed", snapshot
            assert confirmed.get(order_id) == [snapshot["txHash"]], \
                f"order {order_id}: confirmed txs {confirmed.get(order_id)}, snapshot {snapshot['txHash']}"


@pytest.fixture
def stack(pg_url, harness, private_redis_url):
    """Builds a Stack on the test's own database and Redis; extra env as keywords.
    (The processes stop before the database is dropped: `harness` is set up after `pg_url`.)"""
    return lambda **values: Stack(harness, pg_url, private_redis_url, **values)


def test_fifty_parallel_orders_on_two_workers_are_all_confirmed_with_gapless_event_logs(stack):
    s = stack(MOCK_EXEC_LATENCY_MS=300, WORKER_CONCURRENCY=4)
    s.worker(), s.worker()

    with ThreadPoolExecutor(max_workers=10) as pool:
        order_ids = list(pool.map(lambda i: s.api.post_order(amountIn=f"0.{i + 1:03d}"), range(50)))

    assert len(set(order_ids)) == 50
    snapshots = s.api.wait_for_status(order_ids, {"confirmed", "failed"}, timeout=90)
    assert [i for i in order_ids if snapshots[i]["status"] != "confirmed"] == []
    for order_id in order_ids:
        events = s.api.events(order_id)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), order_id
        statuses = [e["status"] for e in events]
        assert statuses[0] == "pending" and statuses[-1] == "confirmed", (order_id, statuses)
        assert statuses.count("confirmed") == 1, (order_id, statuses)
    s.assert_filled_once(snapshots)


def test_socket_on_the_api_streams_an_order_that_runs_on_a_worker_then_closes_normally(stack):
    s = stack(MOCK_EXEC_LATENCY_MS=1500)
    s.worker()
    order_id = s.api.post_order()
    connected_at = dt.datetime.now(dt.timezone.utc)

    messages, code = s.api.read_socket(f"orderId={order_id}")

    assert [m["status"] for m in messages] == LIFECYCLE
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    assert code == 1000
    assert parse_at(messages[-1]["at"]) > connected_at, "the confirmation should have arrived live"
    assert s.api.order(order_id)["status"] == "confirmed"


def test_orders_of_a_worker_killed_after_submitting_are_confirmed_by_a_fresh_worker_and_filled_once(stack):
    s = stack(MOCK_EXEC_LATENCY_MS=3000)
    first = s.worker()
    first_id = s.worker_id(first.pid)
    order_ids = [s.api.post_order() for _ in range(6)]
    s.api.wait_for_event(order_ids, "submitted", timeout=10)

    first.kill()

    assert s.statuses(order_ids) == {i: "submitted" for i in order_ids}, "the kill came too late"
    assert set(s.owners(order_ids).values()) == {first_id}
    s.worker()
    snapshots = s.api.wait_for_status(order_ids, {"confirmed", "failed"}, timeout=30)
    s.assert_filled_once(snapshots)


def test_worker_stopped_with_sigterm_hands_its_orders_to_the_other_worker(stack):
    s = stack(MOCK_EXEC_LATENCY_MS=3000)
    leaving = s.worker()
    leaving_id = s.worker_id(leaving.pid)
    order_ids = [s.api.post_order() for _ in range(6)]
    s.api.wait_for_event(order_ids, "submitted", timeout=10)
    assert set(s.owners(order_ids).values()) == {leaving_id}
    staying = s.worker()
    staying_id = s.worker_id(staying.pid)

    assert leaving.stop(timeout=25) == 0, leaving.tail()

    assert s.worker_id(leaving.pid) is None, "a worker that stopped gracefully leaves the workers table"
    owners = s.owners(order_ids)
    assert leaving_id not in owners.values(), f"orders still held by the stopped worker: {owners}"
    snapshots = s.api.wait_for_status(order_ids, {"confirmed", "failed"}, timeout=30)
    s.assert_filled_once(snapshots)
    assert staying.running and s.worker_id(staying.pid) == staying_id


def test_failed_attempts_are_retried_with_exponential_backoff_until_max_attempts(stack):
    s = stack(MOCK_FAIL_RATE=1, MAX_ATTEMPTS=3, RETRY_BACKOFF_MS=300, MOCK_EXEC_LATENCY_MS=200)
    s.worker()
    order_id = s.api.post_order()

    snapshot = s.api.wait_for_status([order_id], {"confirmed", "failed"}, timeout=30)[order_id]

    assert snapshot["status"] == "failed" and snapshot["attempts"] == 3
    events = s.api.events(order_id)
    attempt = ["routing", "building", "submitted"]
    assert [e["status"] for e in events] == (
        ["pending"] + attempt + ["retrying"] + attempt + ["retrying"] + attempt + ["failed"])
    assert [e["seq"] for e in events] == list(range(1, 14))
    assert events[-1]["data"]["attempts"] == 3 and events[-1]["data"]["error"]["code"]
    retries = [(i, e) for i, e in enumerate(events) if e["status"] == "retrying"]
    assert [e["data"]["retryInMs"] for _, e in retries] == [300, 600]
    assert [e["data"]["attempt"] for _, e in retries] == [1, 2]
    for i, retrying in retries:
        routing = events[i + 1]
        waited_ms = (parse_at(routing["at"]) - parse_at(retrying["at"])) / dt.timedelta(milliseconds=1)
        backoff = retrying["data"]["retryInMs"]
        assert backoff <= waited_ms <= backoff + 1500, (backoff, waited_ms)


def test_while_redis_is_away_orders_are_refused_with_503_and_afterwards_accepted_again(
        pg_url, harness, redis_server_binary):
    port = free_port()
    redis = harness.redis_server(port)
    s = Stack(harness, pg_url, f"redis://127.0.0.1:{port}/0", MOCK_EXEC_LATENCY_MS=300)
    s.worker()
    before = s.order_count()

    redis.kill()

    response = s.api.http.post(s.api.base_url + "/api/orders/execute", json=ORDER, timeout=30)
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert s.order_count() == before, "a refused order must not be stored"
    health = _health(s.api)
    assert health.status_code == 503 and "redis" in health.json()["failing"]

    harness.redis_server(port)

    eventually(lambda: _health(s.api).status_code == 200, 30, "/health did not recover with redis")
    order_id = s.api.post_order()
    snapshot = s.api.wait_for_status([order_id], {"confirmed", "failed"}, timeout=30)[order_id]
    assert snapshot["status"] == "confirmed"


def _health(api) -> requests.Response:
    return api.get("/health", timeout=10)


def test_orders_taken_in_while_no_worker_ran_are_each_executed_once_when_a_worker_starts(stack):
    s = stack(MOCK_EXEC_LATENCY_MS=300, WORKER_CONCURRENCY=1, SWEEP_INTERVAL_MS=100, QUOTE_TIMEOUT_MS=1000)
    with ThreadPoolExecutor(max_workers=8) as pool:
        order_ids = list(pool.map(lambda _: s.api.post_order(), range(40)))
    eventually(lambda: s.query("SELECT count(*) FROM orders WHERE work_due_at > now() - interval '3 seconds'")
               == [(0,)], 10, "orders did not become overdue")

    s.worker()

    def finished() -> int:
        return sum(v in {"confirmed", "failed"} for v in s.statuses(order_ids).values())

    eventually(lambda: finished() == len(order_ids), 60, "orders did not finish")
    starts = collections.Counter(order_id for (order_id, status) in s.query(
        "SELECT order_id, status FROM order_events WHERE status = 'routing'"))
    # claimed from the database by one worker, each exactly once: one attempt per order
    assert {order_id: starts[order_id] for order_id in order_ids} == {order_id: 1 for order_id in order_ids}
    assert set(s.statuses(order_ids).values()) == {"confirmed"}
