"""throughput: N orders POSTed as fast as possible, executed by ONE worker.

Production topology (migrate, gunicorn with WEB_CONCURRENCY API processes,
one `orderengine worker`). A pool of HTTP client threads (one requests.Session
each) POSTs the orders; a poller reads the `orders` table directly until every
order is terminal or the deadline passes. Figures come from the database's
own timestamps (created_at, updated_at, the events' `at`).

With --preload the worker is stopped while the orders are POSTed and started
after: the drain rate is then the worker's alone, not shared with the API.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.harness import (
    ORDER, CpuMeter, Stack, fmt_ms, fmt_s, http_session, load, percentile, self_cpu, table,
)

TERMINAL = ("confirmed", "failed")
#: Redis commands that put steps on / take them off the queue (a sorted set: PriorityRedisHuey;
#: LPUSH/BRPOP if it were a plain list). Calls, not steps: one ZADD may carry several steps.
QUEUE_PUSHES = ("zadd", "lpush")
QUEUE_POPS = ("bzpopmin", "zpopmin", "brpop", "rpop")
STATUSES = ("pending", "routing", "building", "submitted", "retrying", "confirmed", "failed")
GOAL_ORDERS = 2000
GOAL_SECONDS = 20.0


@dataclass
class Post:
    sent: float          # wall clock (time.time())
    done: float
    status: int | None   # HTTP status, None for a transport error
    order_id: str | None = None
    error: str | None = None


@dataclass
class Poll:
    t: float             # wall clock
    counts: dict[str, int]
    queue: int | None
    load1: str


@dataclass
class Result:
    label: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    timeline: list[Poll] = field(default_factory=list)
    goal_met: bool | None = None


def post_orders(url: str, n: int, clients: int, body: dict[str, Any]) -> list[Post]:
    local = threading.local()

    def one(i: int) -> Post:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = http_session(pool=2)
        sent = time.time()
        try:
            r = session.post(url + "/api/orders/execute", json=body, timeout=30)
            done = time.time()
            if r.status_code == 201:
                return Post(sent, done, 201, r.json()["orderId"])
            return Post(sent, done, r.status_code, error=r.text[:200])
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            return Post(sent, time.time(), None, error=f"{type(exc).__name__}: {exc}"[:200])

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client") as pool:
        return list(pool.map(one, range(n)))


def wait_terminal(stack: Stack, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = stack.query("SELECT count(*) FROM orders WHERE id = ANY(%s) AND status IN ('confirmed','failed')",
                           ids)
        if rows[0][0] == len(ids):
            return
        time.sleep(0.2)


class Poller(threading.Thread):
    """Reads status counts (all orders but the warm-up ones) every `interval` until told
    how many to expect and that many are terminal, or until the deadline."""

    def __init__(self, stack: Stack, exclude: list[str], interval: float, deadline_wall: float) -> None:
        super().__init__(name="poller", daemon=True)
        self.stack, self.exclude, self.interval = stack, exclude, interval
        self.deadline_wall = deadline_wall
        self.expected: int | None = None
        self.polls: list[Poll] = []
        self.finished_at: float | None = None
        self.timed_out = False
        self.error: str | None = None

    def run(self) -> None:
        try:
            with self.stack.connect() as conn:
                while True:
                    rows = conn.execute("SELECT status, count(*) FROM orders WHERE id <> ALL(%s) GROUP BY status",
                                        (self.exclude,)).fetchall()
                    poll = Poll(time.time(), dict(rows), self.stack.queue_length(), load())
                    self.polls.append(poll)
                    terminal = sum(poll.counts.get(s, 0) for s in TERMINAL)
                    if self.expected is not None and terminal >= self.expected:
                        self.finished_at = poll.t
                        return
                    if poll.t > self.deadline_wall:
                        self.timed_out = True
                        return
                    time.sleep(self.interval)
        except Exception as exc:  # noqa: BLE001
            self.error = f"{type(exc).__name__}: {exc}"


def run(args) -> Result:
    quote_ms, exec_ms = args.latency
    label = f"throughput (quote {quote_ms} ms, exec {exec_ms} ms, {args.orders} orders" + \
            (", preload" if args.preload else "") + "".join(f", {k}={v}" for k, v in args.env) + ")"
    print(f"\n== {label}: starting ==", flush=True)
    extra = {}
    if args.worker_concurrency:
        extra["WORKER_CONCURRENCY"] = args.worker_concurrency
    body = dict(ORDER, amountIn=args.amount)
    with Stack(quote_ms, exec_ms, keep_logs=args.keep_logs, redis_url=args.redis_url,
               **{**dict(args.env), **extra}) as stack:
        url = stack.start_api(web_concurrency=args.web_concurrency)
        worker = stack.start_worker()
        # warm-up: both API processes import, the chain gets seeded, the worker's pools connect
        warm = [p.order_id for p in post_orders(url, 4, 4, body) if p.order_id]
        wait_terminal(stack, warm, 30 + exec_ms / 1000 * 3)
        if args.preload:
            stack.stop_worker(worker)

        meter = CpuMeter({"api": stack.api_pids, "worker": lambda: [w.pid for w in stack.workers],
                      "redis": stack.redis_pids})
        pg_start, client_start = stack.pg_backend_cpu(), self_cpu()
        xacts_start = pg_xacts(stack)
        redis_start = stack.redis_calls()
        load_start = load()
        meter.mark("start")
        t_start = time.time()
        poller = Poller(stack, warm, args.poll_interval, t_start + args.deadline)
        poller.start()
        posts = post_orders(url, args.orders, args.clients, body)
        meter.mark("posted")
        client_posted = self_cpu()
        load_posted = load()
        ok = [p for p in posts if p.status == 201]
        poller.expected = len(ok)
        t_worker = None
        if args.preload:
            stack.start_worker()
            t_worker = time.time()
            meter.mark("worker up")
        poller.join(args.deadline + 30)
        meter.mark("done")
        client_done = self_cpu()
        load_done = load()
        pg_end = stack.pg_backend_cpu()
        time.sleep(0.6)   # PostgreSQL flushes its transaction counters about once a second
        xacts = pg_xacts(stack) - xacts_start
        redis_end = stack.redis_calls()
        calls = {k: v - redis_start.get(k, 0) for k, v in redis_end.items()} if stack.redis_proc else {}

        r = Result(label, timeline=poller.polls)
        report(r, stack, args, posts, ok, poller, meter, t_worker,
               loads=(load_start, load_posted, load_done),
               client=(client_posted - client_start, client_done - client_posted),
               pg=sum(max(0.0, v - pg_start.get(p, 0.0)) for p, v in pg_end.items()), xacts=xacts, calls=calls,
               goal=(quote_ms, exec_ms) == (200, 2500) and not args.preload)
        return r


def report(r: Result, stack: Stack, args, posts: list[Post], ok: list[Post], poller: Poller,
           meter: CpuMeter, t_worker: float | None, loads, client, pg, xacts: int, calls: dict[str, int],
           goal: bool) -> None:
    ids = [p.order_id for p in ok]
    first_post = min(p.sent for p in posts)
    last_post = max(p.done for p in posts)
    post_window = max(last_post - first_post, 1e-9)
    post_lat = [p.done - p.sent for p in ok]
    errors: dict[str, int] = {}
    for p in posts:
        if p.status != 201:
            key = str(p.status) if p.status else (p.error or "error").split(":")[0]
            errors[key] = errors.get(key, 0) + 1

    counts = dict(stack.query("SELECT status, count(*) FROM orders WHERE id = ANY(%s) GROUP BY status", ids))
    confirmed_rows = stack.query(
        "SELECT created_at, updated_at, attempts FROM orders WHERE id = ANY(%s) AND status = 'confirmed'", ids)
    done_at = sorted(u.timestamp() for _, u, _ in confirmed_rows)
    latencies = [(u - c).total_seconds() for c, u, _ in confirmed_rows]
    retried = sum(1 for *_, a in confirmed_rows if a > 1)
    last_confirmed = done_at[-1] if done_at else None
    fail_codes = stack.query(
        "SELECT error->>'code', count(*) FROM orders WHERE id = ANY(%s) AND status = 'failed' GROUP BY 1", ids)

    # gapless seqs: per order, count == max(seq) == last_seq, min(seq) == 1
    seq_rows = stack.query(
        "SELECT o.id, o.last_seq, count(e.id), coalesce(max(e.seq), 0), coalesce(min(e.seq), 0) "
        "FROM orders o LEFT JOIN order_events e ON e.order_id = o.id WHERE o.id = ANY(%s) GROUP BY o.id, o.last_seq",
        ids)
    gaps = sum(1 for _, last, n, mx, mn in seq_rows if not (n == mx == last and mn == 1))
    filled_twice = stack.query(
        "SELECT count(*) FROM (SELECT split_part(client_tx_id, ':', 2) AS oid FROM sim_transactions "
        "WHERE status = 'confirmed' GROUP BY 1 HAVING count(*) > 1) t")[0][0]
    stages = stage_gaps(stack, ids)
    retry_codes = stack.query(
        "SELECT data->'error'->>'code', min(data->'error'->>'message'), count(*) FROM order_events "
        "WHERE order_id = ANY(%s) AND status = 'retrying' GROUP BY 1 ORDER BY 3 DESC", ids)

    n_conf = counts.get("confirmed", 0)
    n_fail = counts.get("failed", 0)
    other = {k: v for k, v in counts.items() if k not in TERMINAL}
    rows = r.rows
    rows.append(("orders POSTed", f"{len(ok)} accepted of {len(posts)}"
                 + (f"  errors {errors}" if errors else "") + f"  ({args.clients} client threads)"))
    rows.append(("POST rate", f"{len(ok) / post_window:.0f} orders/s over {post_window:.2f} s  "
                 f"(POST latency p50 {fmt_ms(percentile(post_lat, 50))}, p99 {fmt_ms(percentile(post_lat, 99))})"
                 f"  [load {loads[1]}]"))
    rows.append(("confirmed / failed", f"{n_conf} / {n_fail}"
                 + (f"  not terminal: {other}" if other else "")
                 + (f"  failure codes {dict(fail_codes)}" if fail_codes else "")
                 + (f"  ({retried} confirmed after a retry)" if retried else "")))
    if retry_codes:
        rows.append(("retried attempts", "; ".join(f"{code} x{n} (e.g. {msg[:90]!r})" for code, msg, n in retry_codes)))
    if poller.timed_out:
        rows.append(("DEADLINE", f"not all terminal {args.deadline:.0f} s after the first POST"))
    if last_confirmed is not None:
        rows.append(("first POST -> last confirmed", fmt_s(last_confirmed - first_post) + f"  [load {loads[2]}]"))
        rows.append(("last POST -> last confirmed", fmt_s(last_confirmed - last_post)))
        if t_worker is not None:
            rows.append(("worker up -> last confirmed", fmt_s(last_confirmed - t_worker)))
    rows.append(("order latency (created->confirmed)",
                 f"p50 {fmt_s(percentile(latencies, 50))}  p95 {fmt_s(percentile(latencies, 95))}  "
                 f"p99 {fmt_s(percentile(latencies, 99))}  max {fmt_s(max(latencies) if latencies else None)}"))
    if len(done_at) >= 20:
        lo, hi = int(len(done_at) * 0.1), int(len(done_at) * 0.9)
        span = done_at[hi] - done_at[lo]
        steady = (hi - lo) / span if span > 0 else float("inf")
        start = t_worker if t_worker is not None else first_post
        after = [t for t in done_at if t > last_post]
        drain = (f"; after the last POST {len(after) / (after[-1] - last_post):.0f} orders/s"
                 if len(after) >= 20 and after[-1] > last_post else "")
        rows.append(("confirmation rate", f"overall {len(done_at) / (done_at[-1] - start):.0f} orders/s"
                     f"{drain}; 10th-90th pct of confirmations {steady:.0f} orders/s (bursty)"))
    for name, (p50, p95, n) in stages.items():
        rows.append((f"  {name}", f"p50 {fmt_ms(p50)}  p95 {fmt_ms(p95)}  (n={n})"))
    rows.append(("gapless seqs", ("ok" if gaps == 0 else f"{gaps} ORDERS WITH GAPS") + f" ({len(seq_rows)} orders)"))
    rows.append(("filled twice", "none" if filled_twice == 0 else f"{filled_twice} ORDERS"))

    phases = [("start", "posted", "POST phase")]
    if t_worker is not None:
        phases.append(("worker up", "done", "drain phase"))
    else:
        phases.append(("posted", "done", "drain phase"))
    for a, b, name in phases:
        cpu = meter.between(a, b)
        wall = meter._get(b)[1] - meter._get(a)[1]
        parts = [f"{k} {v[0]:.1f} s ({v[1]:.0f}%)" for k, v in cpu.items()]
        c = client[0] if a == "start" else client[1]
        parts.append(f"bench client {c:.1f} s ({100 * c / max(wall, 1e-9):.0f}%)")
        rows.append((f"CPU {name} ({wall:.1f} s)", ", ".join(parts)))
    cpu_all = meter.between("start", "done")
    wall_all = meter._get("done")[1] - meter._get("start")[1]
    rows.append(("CPU whole run", ", ".join(f"{k} {v[0]:.1f} s ({v[1]:.0f}%)" for k, v in cpu_all.items())
                 + f", postgres backends of this db {pg:.1f} s ({100 * pg / max(wall_all, 1e-9):.0f}%)"
                 + "  [100% = one core; the machine has 2]"))
    if ok:
        per = {k: 1000 * v[0] / len(ok) for k, v in cpu_all.items()}
        rows.append(("CPU per order", ", ".join(f"{k} {v:.1f} ms" for k, v in per.items())
                     + f", postgres {1000 * pg / len(ok):.1f} ms;  database transactions per order "
                     f"{xacts / len(ok):.1f} (all processes, incl. the bench's polls)"))
        if calls:
            pushes = sum(calls.get(c, 0) for c in QUEUE_PUSHES)
            pops = sum(calls.get(c, 0) for c in QUEUE_POPS)
            rows.append(("queue and bus per order", f"queue pushes (ZADD calls) {pushes / len(ok):.1f}, "
                         f"pops (BZPOPMIN) {pops / len(ok):.1f}, "
                         f"events published {calls.get('publish', 0) / len(ok):.1f}"))
    for name in ("worker", "gunicorn"):
        events = stack.log_events(name)
        if events:
            rows.append((f"{name} log (warning+)", ", ".join(f"{k} x{v}" for k, v in events.items())))
    rows.append(("load (1/5/15 min)", f"start {loads[0]}, after POSTs {loads[1]}, end {loads[2]}"))
    if goal:
        met = (n_conf == len(posts) and len(posts) >= GOAL_ORDERS and last_confirmed is not None
               and last_confirmed - first_post <= GOAL_SECONDS)
        r.goal_met = met
        rows.append((f"GOAL {GOAL_ORDERS} confirmed within {GOAL_SECONDS:.0f} s by one worker",
                     ("MET" if met else "NOT MET")
                     + ("" if len(posts) >= GOAL_ORDERS else f" (only {len(posts)} orders were sent)")))


def pg_xacts(stack: Stack) -> int:
    rows = stack.query("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", stack.db)
    return int(rows[0][0]) if rows else 0


def stage_gaps(stack: Stack, ids: list[str]) -> dict[str, tuple[float | None, float | None, int]]:
    """Time between consecutive events, by transition (pending->routing, ...), from the events' `at`."""
    rows = stack.query(
        "SELECT status || '->' || nxt, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY gap), percentile_cont(0.95) WITHIN GROUP (ORDER BY gap), "
        "count(*) FROM (SELECT status, lead(status) OVER w AS nxt, "
        "extract(epoch FROM lead(at) OVER w - at) AS gap "
        "FROM order_events WHERE order_id = ANY(%s) WINDOW w AS (PARTITION BY order_id ORDER BY seq)) t "
        "WHERE nxt IS NOT NULL GROUP BY 1 ORDER BY 4 DESC, 1", ids)
    order = ["pending->routing", "routing->building", "building->submitted", "submitted->confirmed"]
    out = {k: (float(a), float(b), n) for k, a, b, n in rows}
    return {k: out[k] for k in sorted(out, key=lambda k: (order.index(k) if k in order else 99, k))}


def print_result(r: Result, timeline: bool) -> None:
    print()
    print(table(r.rows, r.label))
    if timeline and r.timeline:
        t0 = r.timeline[0].t
        print("  timeline (s since first POST: status counts, redis queue length, load):")
        shown = [p for i, p in enumerate(r.timeline) if i % max(1, len(r.timeline) // 40) == 0 or i == len(r.timeline) - 1]
        for p in shown:
            c = " ".join(f"{s[:4]}={p.counts[s]}" for s in STATUSES if p.counts.get(s))
            print(f"    {p.t - t0:6.1f}  {c}  queue={p.queue}  load={p.load1}")
    print(flush=True)
