"""intake: how fast the API takes orders in, beside a bare Flask app on the same server settings.

One run, one client, one machine: first `bench.bare_app` (Flask parses the JSON
body, answers 201; nothing else), then the production API (`wsgi:app`:
validation, PostgreSQL, the Redis queue and bus; no worker runs, so the orders
stay `pending`). Both under `gunicorn -c gunicorn.conf.py` (gthread,
WEB_CONCURRENCY processes, WEB_THREADS threads), each given a short warm-up,
then `--duration` seconds of POSTs of the README's order from `--connections`
keep-alive connections. The figure is the ratio of the two rates. With
`--env AUTH=keys` a key is made with `orderengine keys create` and every POST
(to both apps) sends it.

The client is `wrk` when it is on the PATH (a C load generator: it costs the
2-core machine little). Without it a Python load generator runs instead, and
its figures are labelled client-bound: Python cannot send much faster than the
bare app answers, so the ratio then understates the gap.
"""
from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

from bench.harness import ORDERENGINE, BenchError, CpuMeter, Stack, load, percentile, table

#: the README's order (Demo, and SPEC section 2)
BODY = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": 1, "slippageBps": 50}
TARGET_RATIO = 0.40
WRK = shutil.which("wrk")

LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""
LUA_KEY = 'wrk.headers["Authorization"] = "Bearer %s"\n'



@dataclass
class Load:
    client: str
    requests: int
    seconds: float
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    not_2xx: int
    socket_errors: str


@dataclass
class Run:
    name: str
    load: Load
    cpu: dict[str, tuple[float, float]]
    loads: tuple[str, str]
    stored: int | None = None


@dataclass
class Result:
    label: str
    rows: list[tuple[str, str]] = field(default_factory=list)


# --- load generators ---------------------------------------------------------------------

def wrk(url: str, seconds: float, connections: int, threads: int, script: str) -> Load:
    out = subprocess.run([WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                          "-s", script, url + "/api/orders/execute"],
                         capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr[-500:]}")
    text = out.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if not m:
        raise BenchError(f"cannot read wrk's output:\n{text}")
    unit = {"ms": 1e-3, "s": 1.0, "m": 60.0}.get(m.group(3), 1.0)
    not_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return Load("wrk", int(m.group(1)), float(m.group(2)) * unit,
                float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
                _wrk_ms(text, "50%"), _wrk_ms(text, "99%"),
                int(not_2xx.group(1)) if not_2xx else 0, errors.group(1).strip() if errors else "none")


def _wrk_ms(text: str, pct: str) -> float | None:
    m = re.search(rf"^\s*{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def python_load(url: str, seconds: float, connections: int, key: str | None = None) -> Load:
    """`connections` threads, one keep-alive http.client connection each (client-bound)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine, bad = [], 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/orders/execute", body, headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status // 100 != 2:
                    bad += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)
            failures[0] += bad

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    took = time.monotonic() - started
    ms = [x * 1000 for x in latencies]
    return Load("python (client-bound)", len(latencies), took, len(latencies) / took,
                percentile(ms, 50), percentile(ms, 99), failures[0], "-")


# --- the run -----------------------------------------------------------------------------

def measure(stack: Stack, args, name: str, app: str, script: str, key: str | None = None) -> Run:
    url = stack.start_api(web_concurrency=args.web_concurrency, web_threads=args.web_threads, app=app)
    try:
        generate(args, url, args.warmup, script, key)
        meter = CpuMeter({"gunicorn": stack.api_pids, "redis": stack.redis_pids})
        pg_before = stack.pg_backend_cpu()
        load_before = load()
        meter.mark("start")
        result = generate(args, url, args.duration, script, key)
        meter.mark("end")
        pg_after = stack.pg_backend_cpu()
        cpu = meter.between("start", "end")
        if app == "wsgi:app":
            pg = sum(max(0.0, v - pg_before.get(p, 0.0)) for p, v in pg_after.items())
            cpu["postgres"] = (pg, 100 * pg / max(result.seconds, 1e-9))
        else:
            cpu.pop("redis", None)
        return Run(name, result, cpu, (load_before, load()))
    finally:
        stack.stop_api()


def generate(args, url: str, seconds: float, script: str, key: str | None = None) -> Load:
    if args.client == "wrk":
        return wrk(url, seconds, args.connections, args.threads, script)
    return python_load(url, seconds, args.connections, key)


def api_key(stack: Stack) -> str | None:
    """With AUTH=keys, a key for the run, made as an operator makes one."""
    if stack.env.get("AUTH") != "keys":
        return None
    out = subprocess.run([ORDERENGINE, "keys", "create", "bench"], env=stack.env, cwd=stack.cwd,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise BenchError(f"orderengine keys create failed ({out.returncode}): {out.stderr[-500:]}")
    return out.stdout.splitlines()[-1]


def run(args) -> Result:
    if args.client is None:
        args.client = "wrk" if WRK else "python"
    if args.client == "wrk" and WRK is None:
        raise BenchError("wrk is not on the PATH: `apt-get install -y wrk` (Debian/Ubuntu) or "
                         "`brew install wrk`, or run with --client python (client-bound)")
    auth = dict(args.env).get("AUTH", "off")
    label = (f"intake (POST /api/orders/execute, {args.client}: {args.connections} connections, "
             f"{args.duration:g} s; gunicorn.conf.py with WEB_CONCURRENCY={args.web_concurrency}, "
             f"AUTH={auth})")
    print(f"\n== {label}: starting ==", flush=True)
    if args.client != "wrk":
        print("   wrk not found: the Python load generator is client-bound "
              "(`apt-get install -y wrk` for the real figure)", flush=True)
    with Stack(keep_logs=args.keep_logs, redis_url=args.redis_url, **dict(args.env)) as stack:
        key = api_key(stack)
        script = str(stack.tmp / "post.lua")
        with open(script, "w") as f:
            f.write(LUA % json.dumps(BODY, separators=(",", ":")) + (LUA_KEY % key if key else ""))
        bare = measure(stack, args, "bare Flask", "bench.bare_app:app", script, key)
        prod = measure(stack, args, "production API", "wsgi:app", script, key)
        prod.stored = stack.query("SELECT count(*) FROM orders")[0][0]
        r = Result(label)
        report(r, args, bare, prod)
        return r


def report(r: Result, args, bare: Run, prod: Run) -> None:
    for run_ in (bare, prod):
        got = run_.load
        ok = got.requests - got.not_2xx
        not_2xx = f", {got.not_2xx} not 2xx" if got.not_2xx else ""
        r.rows.append((run_.name, f"{ok / got.seconds:,.0f} POST/s 2xx ({got.requests} requests in "
                       f"{got.seconds:.1f} s{not_2xx}; socket errors {got.socket_errors}); "
                       f"latency p50 {_ms(got.p50_ms)}, p99 {_ms(got.p99_ms)}  "
                       f"[load {run_.loads[0]} -> {run_.loads[1]}]"))
        per = ", ".join(f"{k} {1e3 * v[0] / max(ok, 1):.2f} ms ({v[1]:.0f}%)" for k, v in run_.cpu.items())
        r.rows.append(("  CPU per 2xx POST", per + "  [100% = one core; the machine has 2]"))
    bare_rate = (bare.load.requests - bare.load.not_2xx) / bare.load.seconds
    prod_rate = (prod.load.requests - prod.load.not_2xx) / prod.load.seconds
    ratio = prod_rate / bare_rate if bare_rate else 0.0
    r.rows.append(("production / bare", f"{100 * ratio:.0f} %  (target >= {100 * TARGET_RATIO:.0f} %: "
                   f"{'MET' if ratio >= TARGET_RATIO else 'NOT MET'})"))
    r.rows.append(("orders stored", f"{prod.stored} (warm-up included; every 2xx is one)"))
    if args.client != "wrk":
        r.rows.append(("NOTE", "client-bound: the Python load generator shares the 2 cores; install wrk"))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def print_result(r: Result) -> None:
    print()
    print(table(r.rows, r.label))
    print(flush=True)
