"""latency: one order at a time, POST -> `confirmed` on a WebSocket.

Production topology with one worker, default latencies (quote 200 ms, exec
2500 ms: each confirmation draws 80-120 % of it). Each repetition POSTs an
order, opens /api/orders/execute?orderId=<id> right after the 201 (the replay
covers whatever happened in between), and reads to the close. The figure is
wall time from just before the POST to the arrival of `confirmed`; the
per-status gaps come from the events' own `at` timestamps, so they show where
the time goes inside the engine (queue pickup, quotes, send, confirmation
polling), and the delivery lag is `confirmed` arrival minus its `at`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.harness import ORDER, BenchError, CpuMeter, Stack, fmt_ms, http_session, load, percentile, table

LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]


@dataclass
class Sample:
    total: float | None = None          # POST sent -> confirmed received
    post: float | None = None           # POST round trip
    ws_open: float | None = None        # 201 -> socket open
    lag: float | None = None            # confirmed `at` -> received
    gaps: dict[str, float] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)
    close_code: int | None = None
    load1: float = 0.0


@dataclass
class Result:
    label: str
    rows: list[tuple[str, str]] = field(default_factory=list)


def parse_at(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def one(session, url: str, ws_url: str, timeout: float) -> Sample:
    s = Sample()
    t0 = time.time()
    r = session.post(url + "/api/orders/execute", json=ORDER, timeout=15)
    t_post = time.time()
    if r.status_code != 201:
        raise BenchError(f"POST answered {r.status_code}: {r.text[:200]}")
    s.post = t_post - t0
    order_id = r.json()["orderId"]
    events = []
    deadline = time.monotonic() + timeout
    with connect(f"{ws_url}/api/orders/execute?orderId={order_id}", open_timeout=10, close_timeout=5,
                 proxy=None, compression=None) as ws:
        s.ws_open = time.time() - t_post
        try:
            while time.monotonic() < deadline:
                try:
                    message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                now = time.time()
                event = json.loads(message)
                events.append(event)
                if event.get("status") == "confirmed":
                    s.total = now - t0
                    s.lag = now - parse_at(event["at"])
        except ConnectionClosed as closed:
            s.close_code = closed.rcvd.code if closed.rcvd is not None else None
    s.statuses = [e.get("status") for e in events]
    for a, b in zip(events, events[1:]):
        s.gaps[f"{a['status']}->{b['status']}"] = parse_at(b["at"]) - parse_at(a["at"])
    s.load1 = os.getloadavg()[0]
    return s


def run(args) -> Result:
    quote_ms, exec_ms = args.latency
    label = (f"latency: {args.repeat} orders one at a time (quote {quote_ms} ms, exec {exec_ms} ms"
             + "".join(f", {k}={v}" for k, v in args.env) + ")")
    print(f"\n== {label}: starting ==", flush=True)
    with Stack(quote_ms, exec_ms, keep_logs=args.keep_logs, redis_url=args.redis_url, **dict(args.env)) as stack:
        url = stack.start_api(web_concurrency=2)
        ws_url = url.replace("http://", "ws://", 1)
        stack.start_worker()
        session = http_session(pool=1)
        timeout = 30 + 3 * exec_ms / 1000
        one(session, url, ws_url, timeout)   # warm-up, not counted
        meter = CpuMeter({"api": stack.api_pids, "worker": lambda: [w.pid for w in stack.workers],
                      "redis": stack.redis_pids})
        load_start = load()
        meter.mark("start")
        samples = [one(session, url, ws_url, timeout) for _ in range(args.repeat)]
        meter.mark("end")
        load_end = load()

    r = Result(label)
    totals = [s.total for s in samples if s.total is not None]
    happy = sum(1 for s in samples if s.statuses == LIFECYCLE and s.close_code == 1000)
    r.rows.append(("orders confirmed", f"{len(totals)} of {len(samples)}; happy path + close 1000: {happy}"))
    r.rows.append(("POST -> confirmed on the socket",
                   f"p50 {fmt_ms(percentile(totals, 50))}  p95 {fmt_ms(percentile(totals, 95))}  "
                   f"min {fmt_ms(min(totals) if totals else None)}  max {fmt_ms(max(totals) if totals else None)}"))
    posts = [s.post for s in samples if s.post is not None]
    opens = [s.ws_open for s in samples if s.ws_open is not None]
    lags = [s.lag for s in samples if s.lag is not None]
    r.rows.append(("POST round trip", f"p50 {fmt_ms(percentile(posts, 50))}  p95 {fmt_ms(percentile(posts, 95))}"))
    r.rows.append(("201 -> socket open", f"p50 {fmt_ms(percentile(opens, 50))}  p95 {fmt_ms(percentile(opens, 95))}"))
    names = []
    for s in samples:
        for k in s.gaps:
            if k not in names:
                names.append(k)
    for k in names:
        xs = [s.gaps[k] for s in samples if k in s.gaps]
        r.rows.append((f"  {k} (event at)", f"p50 {fmt_ms(percentile(xs, 50))}  p95 {fmt_ms(percentile(xs, 95))}"
                       f"  (n={len(xs)})"))
    r.rows.append(("confirmed: at -> on the socket",
                   f"p50 {fmt_ms(percentile(lags, 50))}  p95 {fmt_ms(percentile(lags, 95))}"))
    cpu = meter.between("start", "end")
    r.rows.append(("CPU", ", ".join(f"{k} {v[0]:.1f} s ({v[1]:.0f}%)" for k, v in cpu.items())))
    r.rows.append(("load (1/5/15 min)", f"start {load_start}, end {load_end}"))
    return r


def print_result(r: Result) -> None:
    print()
    print(table(r.rows, r.label), flush=True)
    print(flush=True)
