"""soak: the production topology under a steady stream of orders while it is hurt.

Orders are POSTed at `--rate` per second for `--minutes`; every `--kill-every`
seconds one worker is SIGKILLed and a fresh one started; once, half-way, the
private Redis is killed and started again on its port. Then the POSTs stop and
the run waits for every accepted order to end, and audits the deployment's
database (tests/e2e/audit.py, the crash matrix's oracle): lost orders and orders
filled twice must be 0, and the exit status says whether they were.
"""
from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from bench.harness import ORDER, BenchError, Stack, http_session, load, table, wait_until
from tests.e2e.audit import Audit, audit, unfinished

SETTLE_S = 180          # after the last POST, how long every accepted order has to end


@dataclass
class Traffic:
    """What the clients saw."""
    answered: set[str] = field(default_factory=set)      # orderIds of 201s
    refused: set[str] = field(default_factory=set)       # clientOrderIds of 503s
    other: dict[int, int] = field(default_factory=dict)  # other status codes -> count
    dropped: int = 0                                     # no answer (connection error, timeout)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Result:
    audit: Audit
    traffic: Traffic
    kills: int
    redis_restarts: int
    seconds: float
    settle_s: float
    loads: tuple[str, str]
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.audit.problems and not self.traffic.other


def run(args) -> Result:
    env = dict(args.env)
    env.setdefault("MOCK_FAIL_RATE", str(args.fail_rate))
    env.setdefault("WORKER_DEAD_AFTER_MS", "3000")
    env.setdefault("SWEEP_INTERVAL_MS", "500")
    with Stack(*args.latency, keep_logs=args.keep_logs, redis_url=args.redis_url, **env) as stack:
        load_before = load()
        stack.start_api()
        workers = [stack.start_worker() for _ in range(args.workers)]
        traffic = Traffic()
        stop = threading.Event()
        poster = threading.Thread(target=_post_steadily, args=(stack.api_url, args.rate, stop, traffic),
                                  name="soak-poster", daemon=True)
        started = time.monotonic()
        poster.start()
        kills = restarts = 0
        lines: list[str] = []
        duration = args.minutes * 60
        redis_at = duration / 2 + args.kill_every / 4   # not at the moment of a kill
        next_kill = args.kill_every
        try:
            while (elapsed := time.monotonic() - started) < duration:
                if elapsed >= next_kill:
                    victim = workers.pop(0)
                    victim.kill()                     # SIGKILL: nothing is handed back
                    workers.append(stack.start_worker(wait=False))
                    kills += 1
                    next_kill += args.kill_every
                    lines.append(f"{elapsed:6.1f} s  worker {victim.pid} SIGKILLed, a fresh one started")
                if not restarts and elapsed >= redis_at and stack.redis_proc is not None:
                    _restart_redis(stack)
                    restarts += 1
                    lines.append(f"{elapsed:6.1f} s  redis-server killed and started again")
                time.sleep(0.2)
        finally:
            stop.set()
            poster.join()
        seconds = time.monotonic() - started
        if stack.redis_proc is None:
            lines.append("Redis not restarted: --redis-url names a shared server")
        settle_started = time.monotonic()
        try:
            wait_until(lambda: unfinished(stack.query, traffic.answered) == 0, SETTLE_S,
                       "every accepted order to end")
        except BenchError as exc:
            lines.append(str(exc))
        settle_s = time.monotonic() - settle_started
        result = audit(stack.query, traffic.answered, traffic.refused)
        return Result(result, traffic, kills, restarts, seconds, settle_s, (load_before, load()), lines)


def _post_steadily(url: str, rate: float, stop: threading.Event, traffic: Traffic) -> None:
    """POST the i-th order at start + i/rate, from a pool of client threads."""
    session = http_session(pool=32)
    ids = itertools.count(1)

    def one() -> None:
        client_id = f"soak-{next(ids)}"
        try:
            response = session.post(url + "/api/orders/execute", timeout=15,
                                    json={**ORDER, "clientOrderId": client_id})
        except requests.RequestException:
            with traffic.lock:
                traffic.dropped += 1
            return
        with traffic.lock:
            if response.status_code == 201:
                traffic.answered.add(response.json()["orderId"])
            elif response.status_code == 503:
                traffic.refused.add(client_id)
            else:
                traffic.other[response.status_code] = traffic.other.get(response.status_code, 0) + 1

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=32, thread_name_prefix="soak-client") as pool:
        for i in itertools.count():
            if stop.wait(max(0.0, start + i / rate - time.monotonic())):
                break
            pool.submit(one)


def _restart_redis(stack: Stack) -> None:
    """Kill the private redis-server and start it again on its port (empty: no persistence)."""
    old = stack.redis_proc
    old.kill()
    stack.redis_proc = stack.start("redis", old.argv)
    wait_until(lambda: _pong(stack), 15, "redis-server to come back", stack.redis_proc)


def _pong(stack: Stack) -> bool:
    try:
        return bool(stack.redis.ping())
    except Exception:
        return False


def print_result(r: Result) -> None:
    a, t = r.audit, r.traffic
    rows = [
        ("run", f"{r.seconds:.0f} s of POSTs, {r.kills} workers SIGKILLed, Redis restarted {r.redis_restarts}x; "
                f"then {r.settle_s:.1f} s until every accepted order ended"),
        ("load (1/5/15 min)", f"{r.loads[0]} -> {r.loads[1]}"),
        ("accepted", f"{a.accepted} ({a.answered} answered 201, {a.accepted - a.answered} stored without an answer)"),
        ("refused", f"{len(t.refused)} answered 503, {t.dropped} without an answer"
                    + (f", OTHER STATUS CODES {t.other}" if t.other else "")),
        ("confirmed", str(a.statuses.get("confirmed", 0))),
        ("failed", f"{a.statuses.get('failed', 0)} by code {dict(a.failed_by_code) or '{}'}"),
        ("lost", "0" if not (a.lost or a.unfinished) else
         f"{len(a.lost) + len(a.unfinished)} LOST: {len(a.lost)} answered 201 but not stored {a.lost[:3]}, "
         f"{len(a.unfinished)} not ended {dict(list(a.unfinished.items())[:3])}"),
        ("filled twice", "0" if not a.filled_twice else f"{len(a.filled_twice)} ORDERS: {list(a.filled_twice)[:5]}"),
    ]
    for name, found in a.problems.items():
        if name not in ("lost", "unfinished", "filled twice"):
            rows.append((name, f"{len(found)} ORDERS: {list(found)[:5]}"))
    rows.append(("verdict", "ok" if r.ok else "FAILED"))
    print()
    print(table(rows, "soak: production topology, workers SIGKILLed, Redis restarted"))
    for line in r.lines:
        print("  " + line)
