"""`python -m bench [intake|throughput|sockets|latency|soak|all] [options]`: run the benchmarks, print figures.

With no benchmark named, all run in turn: intake, throughput at the default
latencies, throughput at zero latency, sockets, latency (`soak`, a crash test
that takes minutes, only when named). See bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from bench.harness import BenchError, load, raise_nofile


def _latency(text: str) -> tuple[int, int]:
    """'default' -> (200, 2500); '0' -> (0, 0); 'Q,E' -> (Q, E) in ms."""
    text = text.strip().lower()
    if text in ("default", "d"):
        return 200, 2500
    if "," in text:
        q, e = text.split(",", 1)
        return int(q), int(e)
    value = int(text)
    if value != 0:
        raise argparse.ArgumentTypeError("use 'default', '0' or 'QUOTE_MS,EXEC_MS'")
    return 0, 0


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("use NAME=VALUE")
    return key, value


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", type=_env, action="append", default=[], metavar="NAME=VALUE",
                   help="an engine variable for every process started (repeatable), e.g. MOCK_FAIL_RATE=0.1")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed at the end)")
    p.add_argument("--redis-url", default=None,
                   help="use this Redis (e.g. redis://127.0.0.1:6379/14, FLUSHed before and after) instead of "
                        "a private redis-server on a free port; also BENCH_REDIS_URL")


def add_throughput(p: argparse.ArgumentParser) -> None:
    p.add_argument("--orders", type=int, default=2000, help="orders to POST (default 2000)")
    p.add_argument("--latency", type=_latency, default=(200, 2500),
                   help="venue latencies: 'default' (quote 200 ms, exec 2500 ms), '0', or 'QUOTE_MS,EXEC_MS'")
    p.add_argument("--clients", type=int, default=16, help="HTTP client threads POSTing (default 16)")
    p.add_argument("--web-concurrency", type=int, default=2, help="gunicorn processes (default 2)")
    p.add_argument("--worker-concurrency", type=int, default=None,
                   help="WORKER_CONCURRENCY of the one worker (default: the engine's, 10)")
    p.add_argument("--amount", default="0.01", help="amountIn (SOL) of each order (default 0.01)")
    p.add_argument("--deadline", type=float, default=120.0,
                   help="seconds after the first POST to stop waiting (default 120)")
    p.add_argument("--poll-interval", type=float, default=0.25, help="database poll interval (default 0.25 s)")
    p.add_argument("--preload", action="store_true",
                   help="POST every order with the worker stopped, then start it: the worker's drain rate alone")
    p.add_argument("--timeline", action="store_true", help="print the status counts over time")
    add_common(p)


def add_sockets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sockets", type=_levels, default=[250, 500, 1000, 1500],
                   help="comma list of socket counts, one round each (default 250,500,1000,1500)")
    p.add_argument("--web-threads", type=int, default=2000, help="WEB_THREADS of the one gunicorn process")
    p.add_argument("--sock-orders", type=int, default=100,
                   help="orders per round, the sockets spread over them round-robin (default 100; "
                        "0 = one order per socket)")
    p.add_argument("--hold", type=float, default=10.0,
                   help="seconds to hold the sockets open idle, measuring the server's CPU (default 10)")
    p.add_argument("--connect-concurrency", type=int, default=100, help="handshakes in flight (default 100)")
    p.add_argument("--fanout-deadline", type=float, default=120.0,
                   help="seconds after the worker starts to wait for every socket to close (default 120)")
    add_common(p)


def add_intake(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=10.0, help="seconds of POSTs per app (default 10)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds of POSTs before each measurement (default 2)")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--client", choices=("wrk", "python"), default=None,
                   help="load generator (default: wrk if on the PATH, else python, which is client-bound)")
    p.add_argument("--web-concurrency", type=int, default=2, help="gunicorn processes (default 2)")
    p.add_argument("--web-threads", type=int, default=None, help="WEB_THREADS (default: the engine's)")
    add_common(p)


def add_latency(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=20, help="orders, one after the other (default 20)")
    p.add_argument("--latency", type=_latency, default=(200, 2500), help="as for throughput")
    add_common(p)


def add_soak(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of steady POSTs (default 10)")
    p.add_argument("--rate", type=float, default=20.0, help="orders POSTed per second (default 20)")
    p.add_argument("--workers", type=int, default=2, help="orderengine workers running at once (default 2)")
    p.add_argument("--kill-every", type=float, default=60.0,
                   help="seconds between worker SIGKILLs (each victim replaced at once; default 60)")
    p.add_argument("--fail-rate", type=float, default=0.05,
                   help="MOCK_FAIL_RATE, so retries happen too (default 0.05)")
    p.add_argument("--latency", type=_latency, default=(200, 2500), help="as for throughput")
    add_common(p)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench")
    add_intake(sub.add_parser("intake", help="POST rate of the API beside a bare Flask app"))
    add_throughput(sub.add_parser("throughput", help="N orders through one worker"))
    add_sockets(sub.add_parser("sockets", help="WebSockets one gunicorn process holds, and fan-out"))
    add_latency(sub.add_parser("latency", help="one order at a time: POST -> confirmed on a WebSocket"))
    add_soak(sub.add_parser("soak", help="steady orders while workers are SIGKILLed and Redis restarted"))
    p_all = sub.add_parser("all", help="every benchmark with its defaults (what no argument does)")
    add_common(p_all)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["all", *argv]          # `python -m bench [--keep-logs ...]` runs them all
    return parser.parse_args(argv)


def defaults(adder, **overrides) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    adder(p)
    ns = p.parse_args([])
    for k, v in overrides.items():
        setattr(ns, k, v)
    return ns


def revision() -> str:
    """The engine's commit, and whether its code differs from it (the bench runs the working tree)."""
    import subprocess
    from bench.harness import REPO
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "orderengine", "venues",
                                "wsgi.py", "gunicorn.conf.py"], capture_output=True, text=True, timeout=10).stdout
        return head + (" + uncommitted engine changes" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    fds = raise_nofile()
    print(f"orderengine benchmarks at {revision()}: {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, open files {fds}, load {load()}", flush=True)
    from bench import intake, latency, soak, sockets, throughput   # after the fd limit is raised

    plan = []
    if args.bench == "intake":
        plan = [("intake", args)]
    elif args.bench == "throughput":
        plan = [("throughput", args)]
    elif args.bench == "sockets":
        plan = [("sockets", args)]
    elif args.bench == "latency":
        plan = [("latency", args)]
    elif args.bench == "soak":
        plan = [("soak", args)]
    else:
        keep = dict(keep_logs=args.keep_logs, redis_url=args.redis_url, env=args.env)
        plan = [("intake", defaults(add_intake, **keep)),
                ("throughput", defaults(add_throughput, **keep)),
                ("throughput", defaults(add_throughput, latency=(0, 0), **keep)),
                ("sockets", defaults(add_sockets, **keep)),
                ("latency", defaults(add_latency, **keep))]
    failures = 0
    started = time.monotonic()
    for name, ns in plan:
        try:
            if name == "intake":
                intake.print_result(intake.run(ns))
            elif name == "throughput":
                throughput.print_result(throughput.run(ns), getattr(ns, "timeline", False))
            elif name == "sockets":
                sockets.print_result(sockets.run(ns))
            elif name == "soak":
                result = soak.run(ns)
                soak.print_result(result)
                failures += not result.ok
            else:
                latency.print_result(latency.run(ns))
        except (BenchError, Exception) as exc:  # one benchmark failing does not stop the others
            failures += 1
            print(f"\n{name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    print(f"benchmarks done in {time.monotonic() - started:.0f} s, load {load()}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
