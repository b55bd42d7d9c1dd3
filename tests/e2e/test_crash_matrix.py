"""The crash matrix: the production topology killed at every step boundary, and its
PostgreSQL and Redis restarted mid-flight. After each, every accepted order (every 201,
and every order stored whose answer was lost) ends `confirmed` or `failed` with a code,
none is filled twice on the simulated chain, and every event log is gapless with one
terminal event (tests/e2e/audit.py).

Kills are exact: a process armed with ORDERENGINE_FAILPOINTS=<point> SIGKILLs itself
there (orderengine/failpoints.py). PostgreSQL is reached through a TCP proxy that
plays its restart (tests/e2e/tcp_proxy.py); Redis is a private redis-server, killed
and started again on its port.
"""
from __future__ import annotations

import itertools
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
import sqlalchemy as sa

from tests.e2e.audit import audit, unfinished
from tests.e2e.harness import ORDER, Harness, clean_environ, eventually, free_port
from tests.e2e.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

#: fast recovery: a silent worker is dead after 2 s, everybody sweeps twice a second
RECOVERY = dict(WORKER_DEAD_AFTER_MS=2000, SWEEP_INTERVAL_MS=300, MOCK_EXEC_LATENCY_MS=400,
                RETRY_BACKOFF_MS=300, WORKER_CONCURRENCY=4)
SETTLE_S = 45          # deadline for every accepted order to end after the last fault


class Deployment:
    """gunicorn + workers on one test's database and Redis; the engine's processes may
    reach PostgreSQL through a proxy while the test reads it directly."""

    def __init__(self, harness: Harness, pg_url: str, redis_url: str, proxy: TcpProxy | None = None,
                 **values) -> None:
        self.harness = harness
        url = sa.engine.make_url(pg_url)
        self.pg_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        engine_url = url.set(port=proxy.port) if proxy is not None else url
        self.env = clean_environ(DATABASE_URL=engine_url.render_as_string(hide_password=False),
                                 REDIS_URL=redis_url, HOST="127.0.0.1", PORT=free_port(),
                                 **{"WEB_CONCURRENCY": 1, **RECOVERY, **values})
        harness.migrate(self.env)
        self.api = harness.gunicorn(self.env)
        self.answered: set[str] = set()   # every orderId the API answered 201 for
        self.refused: set[str] = set()    # the clientOrderId of every POST answered 503
        self.wrong: list[str] = []        # any other answer (never allowed: a 500, a 4xx)
        self._sent = itertools.count(1)
        self._lock = threading.Lock()

    def worker(self, failpoints: str | None = None, **values):
        env = dict(self.env, **{k: str(v) for k, v in values.items()})
        env.pop("ORDERENGINE_FAILPOINTS", None)  # the API's, if any
        if failpoints:
            env["ORDERENGINE_FAILPOINTS"] = failpoints
        return self.harness.worker(env)

    def replace_api(self) -> None:
        """SIGKILL the API (its master and every process) and start a fresh one, unarmed."""
        self.api.proc.kill()
        self.env = dict(self.env, PORT=str(free_port()))
        self.env.pop("ORDERENGINE_FAILPOINTS", None)
        self.api = self.harness.gunicorn(self.env)

    def post(self, n: int = 1) -> int:
        """POST `n` orders (8 at a time); how many got a 201. A refusal or a dropped
        connection is allowed here: the audit decides whether it was honest."""
        def one(i: int) -> bool:
            client_id = f"crash-{next(self._sent)}"
            try:
                response = self.api.http.post(self.api.base_url + "/api/orders/execute", timeout=15, json={
                    **ORDER, "amountIn": f"0.{i + 1:03d}", "clientOrderId": client_id})
            except requests.RequestException:
                return False
            if response.status_code != 201:
                with self._lock:   # kept, not raised: this may run on the stream's thread
                    if response.status_code == 503:
                        self.refused.add(client_id)
                    else:
                        self.wrong.append(f"{response.status_code} {response.text[:300]}")
                return False
            with self._lock:
                self.answered.add(response.json()["orderId"])
            return True
        with ThreadPoolExecutor(max_workers=8) as pool:
            return sum(pool.map(one, range(n)))

    def stream(self, until: threading.Event, every_s: float = 0.1) -> threading.Thread:
        """POST one order every `every_s` on a thread until `until` is set (a fault meets
        some of them mid-request)."""
        def run() -> None:
            while not until.wait(every_s):
                self.post(1)
        thread = threading.Thread(target=run, name="stream", daemon=True)
        thread.start()
        return thread

    def query(self, sql: str, *params):
        with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def statuses(self) -> dict[str, str]:
        return dict(self.query("SELECT id, status FROM orders"))

    def sent(self) -> set[str]:
        """Orders with a swap on the simulated chain (client tx id venue:order:attempt)."""
        return {c.split(":")[1] for (c,) in self.query("SELECT client_tx_id FROM sim_transactions")}

    def settle_and_audit(self, timeout: float = SETTLE_S):
        eventually(lambda: unfinished(self.query, self.answered) == 0, timeout,
                   lambda: f"orders not finished: {audit(self.query, self.answered).unfinished}")
        result = audit(self.query, self.answered, self.refused)
        assert result.problems == {}, result.summary()
        assert self.wrong == [], "answers other than 201 and 503"
        return result


@pytest.fixture
def deploy(pg_url, harness, private_redis_url):
    return lambda **values: Deployment(harness, pg_url, private_redis_url, **values)


def wait_killed(proc, timeout: float = 30) -> None:
    """The armed process reached its failpoint: it died of SIGKILL."""
    eventually(lambda: not proc.running, timeout, f"{proc.name} {proc.pid} did not reach its failpoint", proc)
    assert proc.popen.returncode == -signal.SIGKILL, f"{proc.name} exited {proc.popen.returncode}"


# --- the worker, killed at each step boundary -----------------------------------------

def _pending(s):        # claimed, nothing recorded yet
    assert set(s.statuses().values()) == {"pending"}


def _routing(s):
    assert "routing" in set(s.statuses().values())


def _before_send(s):    # `building` recorded, the venue has nothing
    building = {i for i, st in s.statuses().items() if st == "building"}
    assert building and not building & s.sent()


def _after_send(s):     # the venue has the swaps, the engine does not know
    # (of those routed to one venue: the kill comes after that venue's call)
    building = {i for i, st in s.statuses().items() if st == "building"}
    assert building & s.sent()


def _submitted(s):
    assert "submitted" in set(s.statuses().values())


def _retrying(s):
    assert "retrying" in set(s.statuses().values())


WORKER_CASES = {
    # failpoint: (what the database shows at the kill, extra settings)
    "start_attempt": (_pending, {}),
    "routing": (_routing, {}),
    "before_send": (_before_send, {}),
    "after_send": (_after_send, {}),
    "submitted": (_submitted, {"MOCK_EXEC_LATENCY_MS": 1500}),
    # about half the swaps fail on chain (a seeded draw per client tx id), backoff 1 s
    "retrying": (_retrying, {"MOCK_FAIL_RATE": 0.5, "RETRY_BACKOFF_MS": 1000, "MAX_ATTEMPTS": 3}),
}


@pytest.mark.parametrize("point", WORKER_CASES)
def test_a_worker_killed_at_a_step_boundary_leaves_every_order_finished_once(deploy, point):
    at_kill, settings = WORKER_CASES[point]
    s = deploy(**settings)
    assert s.post(10) == 10

    doomed = s.worker(failpoints=point)
    wait_killed(doomed)
    at_kill(s)
    s.worker()

    result = s.settle_and_audit()
    assert result.accepted == 10
    if point != "retrying":
        assert result.statuses["confirmed"] == 10, result.summary()


def test_the_worker_taking_over_after_a_send_asks_the_venue_and_never_sends_again(deploy):
    """The first worker dies right after the venue took the swaps; the second, armed to
    die after any send, finishes every order alive: it looked them up, sent nothing."""
    s = deploy()
    assert s.post(10) == 10
    wait_killed(s.worker(failpoints="after_send"))
    heir = s.worker(failpoints="before_send")

    assert s.settle_and_audit().statuses["confirmed"] == 10
    assert heir.running, "the second worker sent a swap again"


def test_a_running_worker_takes_over_the_orders_of_a_killed_one_when_its_heartbeat_stops(deploy):
    """The takeover path of another host: the survivor was up before the kill, so only the
    dead worker's silent heartbeat (WORKER_DEAD_AFTER_MS) tells it."""
    s = deploy(MOCK_EXEC_LATENCY_MS=8000)   # no swap lands before the kill, even on a busy machine
    first = s.worker()
    assert s.post(10) == 10
    eventually(lambda: set(s.statuses().values()) == {"submitted"}, 15, "orders not all submitted")
    survivor = s.worker()
    eventually(lambda: s.query("SELECT 1 FROM workers WHERE pid = %s", survivor.pid), 30, "no heartbeat")

    first.kill()

    assert set(s.statuses().values()) == {"submitted"}, "the kill came too late"
    result = s.settle_and_audit()
    assert result.statuses["confirmed"] == 10
    assert "took over orders of a worker that stopped" in survivor.tail(100_000)


# --- the API, killed after the commit and before the answer ----------------------------

def test_an_order_whose_api_died_before_the_201_is_still_executed_once(deploy):
    s = deploy(ORDERENGINE_FAILPOINTS="intake_committed")
    s.worker()

    assert s.post(1) == 0, "the API should have died before answering"
    eventually(lambda: s.query("SELECT count(*) FROM orders") == [(1,)], 10, "the order was not stored")
    s.replace_api()

    result = s.settle_and_audit()
    assert (result.accepted, result.answered, result.statuses["confirmed"]) == (1, 0, 1)


def test_api_processes_killed_in_the_middle_of_a_burst_lose_no_order(deploy):
    # every API process dies at its 3rd group commit; gunicorn starts another (armed too)
    s = deploy(ORDERENGINE_FAILPOINTS="intake_committed:3", WEB_CONCURRENCY=2)
    s.worker()

    s.post(40)
    s.replace_api()
    assert s.post(5) == 5, "the fresh API should take orders"

    result = s.settle_and_audit()
    assert result.accepted > result.answered, "no API process died with answers unsent"
    assert result.statuses["confirmed"] == result.accepted


# --- PostgreSQL and Redis restarted mid-flight -------------------------------------------

def test_a_postgresql_restart_mid_flight_loses_no_order_and_fills_none_twice(pg_url, harness, private_redis_url):
    url = sa.engine.make_url(pg_url)
    with TcpProxy(url.host, url.port or 5432) as proxy:
        s = Deployment(harness, pg_url, private_redis_url, proxy=proxy, MOCK_EXEC_LATENCY_MS=1000)
        s.worker(), s.worker()
        assert s.post(10) == 10
        eventually(lambda: "submitted" in s.statuses().values(), 15, "nothing submitted yet")
        before = proxy.connections

        stop = threading.Event()
        stream = s.stream(stop)                   # orders arrive before, during and after
        eventually(lambda: len(s.answered) >= 15, 10, "the stream did not start")
        proxy.restart(down_s=2.0)
        eventually(lambda: len(s.answered) >= 25, 20, "no order accepted after the restart")
        stop.set(), stream.join()

        assert s.post(5) == 5, "orders should be accepted again after the restart"
        result = s.settle_and_audit()
        assert proxy.connections > before, "the processes never reconnected"
        assert result.statuses["confirmed"] + result.statuses["failed"] == result.accepted


def test_a_redis_restart_mid_flight_loses_no_order_and_fills_none_twice(pg_url, harness, redis_server_binary):
    port = free_port()
    redis = harness.redis_server(port)
    s = Deployment(harness, pg_url, f"redis://127.0.0.1:{port}/0", MOCK_EXEC_LATENCY_MS=1000)
    s.worker(), s.worker()
    assert s.post(10) == 10
    eventually(lambda: "submitted" in s.statuses().values(), 15, "nothing submitted yet")

    stop = threading.Event()
    stream = s.stream(stop)                    # orders arrive before, during and after
    eventually(lambda: len(s.answered) >= 15, 10, "the stream did not start")
    redis.kill()
    eventually(lambda: s.refused, 10, "no order was refused while Redis was away")
    harness.redis_server(port)
    eventually(lambda: len(s.answered) >= 25, 30, "no order accepted after Redis came back")
    stop.set(), stream.join()
    result = s.settle_and_audit()
    assert result.statuses["confirmed"] == result.accepted


def test_an_order_whose_insert_committed_while_postgresql_went_away_is_not_refused_and_run(
        pg_url, harness, private_redis_url):
    """The connection dies after PostgreSQL got the INSERT of a new order and before its
    answer came back: the order is stored, and the client must not be told it was not."""
    url = sa.engine.make_url(pg_url)
    with TcpProxy(url.host, url.port or 5432) as proxy:
        s = Deployment(harness, pg_url, private_redis_url, proxy=proxy)
        s.worker()
        proxy.cut_on(b"INSERT INTO orders")

        s.post(1)

        assert proxy.cuts == 1
        eventually(lambda: s.query("SELECT count(*) FROM orders") == [(1,)], 10, "the INSERT was not committed")
        s.settle_and_audit()


#: the worker's commits whose answer the cut loses: (what PostgreSQL gets, then its COMMIT)
WORKER_COMMITS = {
    "claim": b"UPDATE orders SET work_owner=",    # a claim of due orders (pump.py adopts them)
    "transition": b"INSERT INTO order_events",     # a step's events and snapshots
    "send": b"INSERT INTO sim_transactions",       # the venue's record of the swaps
    "landing": b"UPDATE sim_transactions",         # the chain settling them
}


@pytest.mark.parametrize("statement", WORKER_COMMITS.values(), ids=WORKER_COMMITS.keys())
def test_a_worker_whose_commit_was_lost_with_its_connection_still_executes_every_order_once(
        pg_url, harness, private_redis_url, statement):
    """PostgreSQL committed; the worker only saw its connection die. It must find out."""
    url = sa.engine.make_url(pg_url)
    with TcpProxy(url.host, url.port or 5432) as proxy:
        s = Deployment(harness, pg_url, private_redis_url, proxy=proxy)
        assert s.post(5) == 5
        proxy.cut_on(statement, then=b"COMMIT")

        s.worker()

        eventually(lambda: proxy.cuts == 1, 15, "the statement never came")
        eventually(lambda: set(s.statuses().values()) == {"confirmed"}, 20,
                   lambda: f"orders not confirmed: {s.statuses()}")
        s.settle_and_audit()
