"""sockets: how many WebSockets one gunicorn process holds, and how fast it fans out.

One round per level N: a fresh gunicorn with WEB_CONCURRENCY=1 and
WEB_THREADS=--web-threads; orders created while no worker runs (so they stay
`pending` and their sockets stay open: the server replays the pending event
and waits); N asyncio `websockets` clients, one per order by default, each on
/api/orders/execute?orderId=<id>. While they are held: how many are open and
got the replayed event, the gunicorn worker's RSS, threads and open files, and
whether GET /health and a POST still answer within 1 s, and how many sockets
were refused with 1013 when N is over MAX_SOCKETS_PER_PROCESS (set it with
--env MAX_SOCKETS_PER_PROCESS=1000; the bench leaves it out of the way
otherwise, as it does every SPEC §6 limit); the server's CPU while the
sockets sit idle (--hold seconds). Then a worker starts, and we time until
every socket got `confirmed` and was closed with 1000, and how late each
`confirmed` reached its socket after the event was stored (its `at`).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.harness import (
    ORDER, CpuMeter, Stack, fmt_ms, fmt_s, http_session, load, percentile, status_field, open_fds, table,
)
from bench.throughput import post_orders

OPEN_TIMEOUT_S = 60
HEALTH_PROBES = 5


@dataclass
class Sock:
    order_id: str
    opened: float | None = None
    replayed: float | None = None
    confirmed_recv: float | None = None
    confirmed_at: float | None = None      # the event's own `at`
    statuses: list[str] = field(default_factory=list)
    close_code: int | None = None
    closed: float | None = None
    error: str | None = None


@dataclass
class Round:
    n: int
    rows: list[tuple[str, str]] = field(default_factory=list)


def parse_at(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def hold_socket(ws_url: str, rec: Sock, sem: asyncio.Semaphore) -> None:
    try:
        async with sem:
            ws = await connect(f"{ws_url}/api/orders/execute?orderId={rec.order_id}", proxy=None,
                               compression=None, open_timeout=OPEN_TIMEOUT_S, close_timeout=10,
                               ping_interval=None, max_queue=64)
        rec.opened = time.time()
        async with ws:
            async for message in ws:
                now = time.time()
                event = json.loads(message)
                status = event.get("status")
                rec.statuses.append(status or "error")
                if status == "pending" and rec.replayed is None:
                    rec.replayed = now
                elif status == "confirmed":
                    rec.confirmed_recv = now
                    rec.confirmed_at = parse_at(event["at"])
        rec.close_code = ws.close_code
    except ConnectionClosed as closed:
        rec.close_code = closed.rcvd.code if closed.rcvd is not None else None
        rec.error = rec.error or f"closed: {closed}"
    except asyncio.CancelledError:
        rec.error = rec.error or "cancelled by the bench (deadline)"
        raise
    except Exception as exc:  # noqa: BLE001 - counted
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        rec.closed = time.time()


def health_probe(url: str) -> tuple[int, float, list[str]]:
    """(answers within 1 s with 200, slowest answer, problems) over HEALTH_PROBES GETs."""
    return probe(lambda session: session.get(url + "/health", timeout=1.0), 200)


def post_probe(url: str) -> tuple[int, float, list[str]]:
    """(POSTs answered 201 within 1 s, slowest answer, problems) over HEALTH_PROBES orders."""
    return probe(lambda session: session.post(url + "/api/orders/execute", json=ORDER, timeout=1.0), 201)


def probe(request, status: int) -> tuple[int, float, list[str]]:
    """HEALTH_PROBES requests one after the other: (answered `status` within 1 s, slowest, problems)."""
    session = http_session(pool=1)
    good, worst, problems = 0, 0.0, []
    for _ in range(HEALTH_PROBES):
        t = time.monotonic()
        try:
            r = request(session)
            took = time.monotonic() - t
            worst = max(worst, took)
            if r.status_code == status and took <= 1.0:
                good += 1
            else:
                problems.append(f"{r.status_code} in {took * 1000:.0f} ms")
        except requests.RequestException as exc:
            worst = max(worst, time.monotonic() - t)
            problems.append(type(exc).__name__)
        time.sleep(0.1)
    return good, worst, problems


def proc_figures(pid: int) -> str:
    rss = status_field(pid, "VmRSS")
    return (f"RSS {rss / 1024:.0f} MiB, threads {status_field(pid, 'Threads')}, open fds {open_fds(pid)}"
            if rss is not None else "(gone)")


async def one_round(stack: Stack, args, n: int) -> Round:
    r = Round(n)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sock-bench")
    blocking = lambda fn, *a: loop.run_in_executor(pool, fn, *a)  # noqa: E731

    threads = max(args.web_threads, 1)
    url = await blocking(lambda: stack.start_api(web_concurrency=1, web_threads=threads))
    ws_url = url.replace("http://", "ws://", 1)
    gworker = stack.api_worker_pids()[0]
    n_orders = n if not args.sock_orders else max(1, min(args.sock_orders, n))
    posts = await blocking(post_orders, url, n_orders, 16, ORDER)
    ids = [p.order_id for p in posts if p.order_id]
    if len(ids) < n_orders:
        r.rows.append(("ORDERS", f"only {len(ids)} of {n_orders} accepted"))
    base = proc_figures(gworker)
    r.rows.append(("gunicorn worker before sockets", f"{base}  [{n_orders} pending orders, load {load()}]"))

    recs = [Sock(ids[i % len(ids)]) for i in range(n)]
    sem = asyncio.Semaphore(args.connect_concurrency)
    t_open = time.time()
    tasks = [asyncio.create_task(hold_socket(ws_url, rec, sem)) for rec in recs]
    deadline = time.monotonic() + OPEN_TIMEOUT_S + 30
    while time.monotonic() < deadline:
        if sum(1 for x in recs if x.replayed or x.closed) >= n:
            break
        await asyncio.sleep(0.2)
    t_all = time.time()
    await asyncio.sleep(1.0)
    open_now = sum(1 for x in recs if x.opened and not x.closed)
    replayed = sum(1 for x in recs if x.replayed and not x.closed)
    refusals = Counter(x.close_code for x in recs if x.closed and x.close_code in (1013, 4429))
    failed = Counter((x.error or "")[:80] for x in recs if x.closed and x.close_code not in (1013, 4429))
    r.rows.append(("sockets open + replayed", f"{replayed} of {n} (open {open_now}) in {t_all - t_open:.1f} s"
                   + (f"  failures {dict(failed)}" if failed else "")))
    limit = stack.env.get("MAX_SOCKETS_PER_PROCESS")
    r.rows.append(("refused: 1013 (process full) / 4429 (key)",
                   f"{refusals.get(1013, 0)} / {refusals.get(4429, 0)}  [MAX_SOCKETS_PER_PROCESS {limit}, "
                   f"worker_connections {int(limit) + threads if limit else '-'}]"))
    r.rows.append(("gunicorn worker holding them", f"{proc_figures(gworker)}  [load {load()}]"))
    good, worst, problems = await blocking(health_probe, url)
    conns = await blocking(lambda: stack.query(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", stack.db)[0][0])
    r.rows.append(("PostgreSQL connections to the db", f"{conns} (all processes; the worker is not running)"))
    r.rows.append(("GET /health while held", f"{good}/{HEALTH_PROBES} within 1 s, slowest {worst * 1000:.0f} ms"
                   + (f"  problems {problems}" if problems else "")))
    good, worst, problems = await blocking(post_probe, url)
    r.rows.append(("POST an order while held", f"{good}/{HEALTH_PROBES} 201 within 1 s, slowest "
                   f"{worst * 1000:.0f} ms" + (f"  problems {problems}" if problems else "") + f"  [load {load()}]"))

    meter = CpuMeter({"gunicorn": stack.api_pids, "worker": lambda: [w.pid for w in stack.workers],
                      "redis": stack.redis_pids})
    meter.mark("hold")
    await asyncio.sleep(args.hold)
    meter.mark("held")
    cpu = meter.between("hold", "held")["gunicorn"]
    r.rows.append((f"gunicorn CPU, sockets idle {args.hold:.0f} s",
                   f"{cpu[0]:.1f} s ({cpu[1]:.0f}% of a core)  [load {load()}]"))

    meter.mark("worker")
    await blocking(stack.start_worker)
    t_worker = time.time()
    fan_deadline = time.monotonic() + args.fanout_deadline
    while time.monotonic() < fan_deadline and not all(t.done() for t in tasks):
        await asyncio.sleep(0.2)
    meter.mark("fanned")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    t_end = time.time()

    rows = await blocking(lambda: stack.query(
        "SELECT max(updated_at), count(*) FILTER (WHERE status = 'confirmed') FROM orders WHERE id = ANY(%s)", ids))
    last_confirmed, n_confirmed = rows[0]
    got_confirmed = sum(1 for x in recs if x.confirmed_recv)
    codes = Counter(x.close_code for x in recs)
    lags = [x.confirmed_recv - x.confirmed_at for x in recs if x.confirmed_recv and x.confirmed_at]
    last_close = max((x.closed for x in recs if x.close_code == 1000), default=None)
    r.rows.append(("orders confirmed (database)", f"{n_confirmed} of {len(ids)}; worker start -> last confirmed "
                   + (fmt_s(last_confirmed.timestamp() - t_worker) if last_confirmed else "-")))
    r.rows.append(("sockets got confirmed", f"{got_confirmed} of {n}; close codes {dict(codes)}"))
    r.rows.append(("worker start -> last socket closed 1000", fmt_s(last_close - t_worker) if last_close else "-"))
    r.rows.append(("confirmed delivery lag (event at -> socket)",
                   f"p50 {fmt_ms(percentile(lags, 50))}  p99 {fmt_ms(percentile(lags, 99))}  "
                   f"max {fmt_ms(max(lags) if lags else None)}"))
    cpu = meter.between("worker", "fanned")
    wall = meter._get("fanned")[1] - meter._get("worker")[1]
    r.rows.append((f"CPU during fan-out ({wall:.1f} s)",
                   ", ".join(f"{k} {v[0]:.1f} s ({v[1]:.0f}%)" for k, v in cpu.items()) + f"  [load {load()}]"))
    events = stack.log_events(procs=[stack.api])
    if events:
        r.rows.append(("gunicorn log (warning+)", ", ".join(f"{k} x{v}" for k, v in events.items())))
    if t_end - t_worker > args.fanout_deadline:
        r.rows.append(("DEADLINE", f"sockets still open {args.fanout_deadline:.0f} s after the worker started"))

    for w in list(stack.workers):
        await blocking(stack.stop_worker, w)
    await blocking(stack.stop_api)
    pool.shutdown(wait=False)
    return r


async def run_async(args) -> list[Round]:
    rounds = []
    with Stack(keep_logs=args.keep_logs, redis_url=args.redis_url, **dict(args.env)) as stack:
        for n in args.sockets:
            print(f"\n== sockets: round of {n} ==", flush=True)
            try:
                r = await one_round(stack, args, n)
            except Exception as exc:  # noqa: BLE001 - report the round, stop the ramp
                r = Round(n, [("FAILED", f"{type(exc).__name__}: {str(exc)[:300]}")])
                if stack.api is not None:
                    events = stack.log_events(procs=[stack.api])
                    if events:
                        r.rows.append(("gunicorn log (warning+)",
                                       ", ".join(f"{k} x{v}" for k, v in events.items())))
                print_round(r)
                rounds.append(r)
                break
            print_round(r)
            rounds.append(r)
    return rounds


def run(args) -> list[Round]:
    return asyncio.run(run_async(args))


def print_round(r: Round) -> None:
    print(table(r.rows, f"sockets: {r.n} WebSockets on one gunicorn process"), flush=True)


def print_result(rounds: list[Round]) -> None:
    print(flush=True)   # each round was printed as it ended
