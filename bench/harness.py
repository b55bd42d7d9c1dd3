"""The benchmarks' harness: a throwaway deployment in the production topology.

`Stack` owns one scratch PostgreSQL database (`bench_<random>`), one Redis db
(flushed before and after), one temporary working directory (so no `.env` is
read) and the processes it starts: `orderengine migrate`, gunicorn and
`orderengine worker`. Every process runs in its own session and is stopped by
its own id (SIGTERM, then SIGKILL of its process group after a deadline), and
`Stack.close()` always runs: on normal exit, on an exception, on Ctrl-C and on
SIGTERM. Nothing is left behind.

Also here: reading CPU time, RSS and thread counts from /proc, the load
average, and a few small statistics helpers.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import psycopg
import redis
import requests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ORDERENGINE = str(BIN / "orderengine")
GUNICORN = str(BIN / "gunicorn")
GUNICORN_CONF = str(REPO / "gunicorn.conf.py")

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: a Redis URL to use instead of a private redis-server (e.g. redis://127.0.0.1:6379/14)
SHARED_REDIS = os.environ.get("BENCH_REDIS_URL", "")
REDIS_SERVER = shutil.which("redis-server")
#: PriorityRedisHuey("orderengine")'s queue: a sorted set (ZADD to queue, BZPOPMIN to take;
#: huey/storage.py RedisPriorityQueue). A plain RedisHuey would keep a list under the same key.
QUEUE_KEY = "huey.redis.orderengine"

START_TIMEOUT_S = 40
STOP_TIMEOUT_S = 25
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: every orderengine variable: removed from the children's environment unless the bench sets it
ENGINE_VARIABLES = {
    "PORT", "HOST", "DATABASE_URL", "REDIS_URL", "MOCK_FAIL_RATE", "MOCK_QUOTE_LATENCY_MS",
    "MOCK_EXEC_LATENCY_MS", "MAX_ATTEMPTS", "RETRY_BACKOFF_MS", "WORKER_CONCURRENCY",
    "MAX_ORDERS_PER_MINUTE", "QUOTE_TIMEOUT_MS", "VENUES", "MARKET_SEED", "LOG_LEVEL",
    "WEB_CONCURRENCY", "WEB_THREADS", "WORKER_DEAD_AFTER_MS",
    "SWEEP_INTERVAL_MS", "ORDERENGINE_FAILPOINTS", "RATE_LIMIT_PER_MINUTE", "MAX_QUEUED_ORDERS",
    "MAX_SOCKETS_PER_KEY", "MAX_SOCKETS_PER_PROCESS", "AUTH",
}

#: the bench is one client address sending thousands of orders and sockets: SPEC §6's limits
#: are set out of its way unless a benchmark (or --env) sets them
BENCH_LIMITS = {"RATE_LIMIT_PER_MINUTE": "100000000", "MAX_QUEUED_ORDERS": "100000000",
                "MAX_SOCKETS_PER_KEY": "100000", "MAX_SOCKETS_PER_PROCESS": "100000"}


class BenchError(RuntimeError):
    """The deployment under test did not come up or misbehaved; the message says how."""


# --- the machine -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


def load1() -> float:
    return os.getloadavg()[0]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    out.extend(int(p) for p in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children(p))
    return pids


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in tree(pid)}


def status_field(pid: int, name: str) -> int | None:
    """An integer field of /proc/<pid>/status (VmRSS in kB, Threads, ...)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class CpuMeter:
    """CPU seconds used by named processes between `mark()`s.

    `groups` maps a name to a function returning the pids to count now (for gunicorn:
    the master and its workers). A pid that appears later counts from 0; one that
    disappears keeps its last reading."""

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]]) -> None:
        self.groups = groups
        self.marks: list[tuple[str, float, dict[str, dict[int, float]]]] = []

    def _read(self) -> dict[str, dict[int, float]]:
        return {name: {p: cpu_seconds(p) for p in pids()} for name, pids in self.groups.items()}

    def mark(self, label: str) -> None:
        self.marks.append((label, time.monotonic(), self._read()))

    def between(self, a: str, b: str) -> dict[str, tuple[float, float]]:
        """name -> (cpu seconds, % of one core) between marks `a` and `b`."""
        (_, ta, ra), (_, tb, rb) = self._get(a), self._get(b)
        wall = max(tb - ta, 1e-9)
        out = {}
        for name in self.groups:
            before, after = ra.get(name, {}), rb.get(name, {})
            used = sum(max(0.0, after.get(p, before.get(p, 0.0)) - before.get(p, 0.0))
                       for p in set(before) | set(after))
            out[name] = (used, 100.0 * used / wall)
        return out

    def _get(self, label: str):
        for m in self.marks:
            if m[0] == label:
                return m
        raise KeyError(label)


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- statistics ----------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fmt_s(value: float | None, places: int = 2) -> str:
    return "-" if value is None else f"{value:.{places}f} s"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def table(rows: list[tuple[str, str]], title: str | None = None) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title, "-" * len(title)] if title else []
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


# --- processes -----------------------------------------------------------------------------

class Process:
    """One started command, in its own session, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (graceful), then SIGKILL of its process group after `timeout`."""
        if self.running:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)   # its own group: pgid == its pid
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:] or "(empty)"
        except OSError as exc:
            return f"(no log: {exc})"


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               proc: Process | None = None, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; BenchError at the deadline or
    when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and not proc.running:
            raise BenchError(f"{proc.name} exited with {proc.popen.returncode} while waiting for "
                             f"{what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            tail = f"\n--- {proc.name} log ---\n{proc.tail()}" if proc is not None else ""
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(interval)


# --- the deployment ------------------------------------------------------------------------

_open_stacks: list["Stack"] = []


def _close_all() -> None:
    for stack in list(_open_stacks):
        stack.close()


def _on_sigterm(signum, frame):  # turn SIGTERM into an exception, so every `finally` runs
    raise SystemExit(128 + signum)


atexit.register(_close_all)
with contextlib.suppress(ValueError):     # not the main thread: leave signals alone
    signal.signal(signal.SIGTERM, _on_sigterm)


class Stack:
    """A deployment: scratch database, flushed Redis db, API server and workers.

    Use as a context manager; `close()` stops every process, drops the database and
    flushes the Redis db."""

    def __init__(self, quote_latency_ms: int = 200, exec_latency_ms: int = 2500,
                 keep_logs: bool = False, redis_url: str | None = None, **values: Any) -> None:
        raise_nofile()
        self.db = f"bench_{secrets.token_hex(4)}"
        self.keep_logs = keep_logs
        self.tmp = Path(tempfile.mkdtemp(prefix="orderengine-bench-"))
        self.cwd = self.tmp / "cwd"
        self.cwd.mkdir()
        self.processes: list[Process] = []
        self.api: Process | None = None
        self.api_url: str | None = None
        self.workers: list[Process] = []
        self._closed = False
        self.pg_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        self.redis_proc: Process | None = None
        self.redis_url = redis_url or SHARED_REDIS or None
        _open_stacks.append(self)
        try:
            if self.redis_url is None:
                self.redis_url = self._start_redis()
            self.redis = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        except BaseException:
            self.close()
            raise
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ENGINE_VARIABLES and k != "PYTHONPATH" and not k.lower().endswith("_proxy")}
        self.env.update({
            "DATABASE_URL": "postgresql+psycopg://" + self.pg_url.split("://", 1)[1],
            "REDIS_URL": self.redis_url,
            "LOG_LEVEL": "WARNING",
            "HOST": "127.0.0.1",
            "MOCK_QUOTE_LATENCY_MS": str(quote_latency_ms),
            "MOCK_EXEC_LATENCY_MS": str(exec_latency_ms),
            **BENCH_LIMITS,
        })
        self.env.update({k: str(v) for k, v in values.items()})
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{self.db}"')
            self.redis.flushdb()
            self.run("migrate", [ORDERENGINE, "migrate"])
        except BaseException:
            self.close()
            raise

    # --- processes

    def _start_redis(self) -> str:
        """A redis-server of this run's own, on a free port: the test suites hand out the shared
        server's db numbers 1..15 and FLUSHDB them, and their workers would take our queued
        steps (the queue's name is the same in every deployment)."""
        if REDIS_SERVER is None:
            raise BenchError("redis-server is not installed; set BENCH_REDIS_URL=redis://127.0.0.1:6379/<db>")
        port = free_port()
        proc = self.start("redis", [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--daemonize", "no", "--maxclients", "10000"],
                          dict(os.environ))
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
        wait_until(up, 15, f"redis-server on :{port}", proc)
        client.close()
        self.redis_proc = proc
        return f"redis://127.0.0.1:{port}/0"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.tmp / f"{name}-{len(self.processes)}.log"
        proc = Process(name, argv, env or self.env, self.cwd, log)
        self.processes.append(proc)
        return proc

    def run(self, name: str, argv: list[str], timeout: float = 60) -> None:
        proc = self.start(name, argv)
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError(f"{name} did not finish in {timeout} s:\n{proc.tail()}") from None
        if code != 0:
            raise BenchError(f"{name} exited with {code}:\n{proc.tail()}")

    def start_api(self, web_concurrency: int = 2, web_threads: int | None = None,
                  app: str = "wsgi:app") -> str:
        """gunicorn <app> -c gunicorn.conf.py on a free port; returns its base URL once
        GET /health answers 200 (and every gunicorn worker is up)."""
        if self.api is not None:
            raise BenchError("the API is already running")
        port = free_port()
        env = dict(self.env, PORT=str(port), WEB_CONCURRENCY=str(web_concurrency))
        if web_threads is not None:
            env["WEB_THREADS"] = str(web_threads)
        argv = [GUNICORN, app, "-c", GUNICORN_CONF]
        if app != "wsgi:app":   # wsgi is installed with the engine; others import from the repository
            argv += ["--pythonpath", str(REPO)]
        proc = self.start("gunicorn", argv, env)
        url = f"http://127.0.0.1:{port}"
        session = requests.Session()
        session.trust_env = False

        def healthy() -> bool:
            try:
                return session.get(url + "/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_until(healthy, START_TIMEOUT_S, f"gunicorn on :{port} to answer GET /health", proc)
        wait_until(lambda: len(children(proc.pid)) >= web_concurrency, START_TIMEOUT_S,
                   f"{web_concurrency} gunicorn workers", proc)
        self.api, self.api_url = proc, url
        return url

    def api_pids(self) -> list[int]:
        return tree(self.api.pid) if self.api is not None and self.api.running else []

    def api_worker_pids(self) -> list[int]:
        return children(self.api.pid) if self.api is not None and self.api.running else []

    def redis_pids(self) -> list[int]:
        return [self.redis_proc.pid] if self.redis_proc is not None and self.redis_proc.running else []

    def stop_api(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api, self.api_url = None, None

    def start_worker(self, wait: bool = True, **values: Any) -> Process:
        """`orderengine worker`; with `wait`, returns once its heartbeat row is in the database."""
        env = dict(self.env, **{k: str(v) for k, v in values.items()})
        proc = self.start("worker", [ORDERENGINE, "worker"], env)
        self.workers.append(proc)
        if wait:
            wait_until(lambda: self.query("SELECT 1 FROM workers WHERE pid = %s AND host = %s",
                                          proc.pid, socket.gethostname()),
                       START_TIMEOUT_S, f"worker {proc.pid} to beat its heartbeat", proc)
        return proc

    def stop_worker(self, proc: Process) -> None:
        proc.stop()
        if proc in self.workers:
            self.workers.remove(proc)

    # --- what the deployment holds

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.pg_url, autocommit=True, connect_timeout=5)

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Run one statement on a fresh connection; retried a few times when PostgreSQL
        refuses connections (its max_connections is shared with everything else on it)."""
        for attempt in range(5):
            try:
                with self.connect() as conn:
                    return conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if attempt == 4:
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")

    def log_events(self, name: str | None = None, min_level: str = "warning",
                   procs: list[Process] | None = None) -> dict[str, int]:
        """'<level>: <event>' -> count, from the JSON log lines of the processes called `name`
        (or of `procs`)."""
        levels = ["debug", "info", "warning", "error", "critical"]
        floor = levels.index(min_level)
        counts: dict[str, int] = {}
        for proc in (procs if procs is not None else [p for p in self.processes if p.name == name]):
            try:
                lines = proc.log.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if not line.startswith("{"):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                level = str(record.get("level", "")).lower()
                if level in levels and levels.index(level) >= floor:
                    key = f"{level}: {record.get('event')}"
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def queue_length(self) -> int | None:
        """Steps waiting in the shared queue (a sorted set; a list if the queue is a plain one)."""
        try:
            kind = self.redis.type(QUEUE_KEY)
            if kind == b"list":
                return int(self.redis.llen(QUEUE_KEY))
            return int(self.redis.zcard(QUEUE_KEY))   # "none" (empty) counts 0
        except redis.RedisError:
            return None

    def redis_calls(self) -> dict[str, int]:
        """Calls per Redis command so far (only meaningful on a private redis-server)."""
        try:
            stats = self.redis.info("commandstats")
        except redis.RedisError:
            return {}
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    def pg_backend_cpu(self) -> dict[int, float]:
        """CPU seconds so far of the PostgreSQL backends connected to our database
        (best effort: backends that already left are not counted)."""
        try:
            pids = [r[0] for r in self.query("SELECT pid FROM pg_stat_activity WHERE datname = %s", self.db)]
        except psycopg.Error:
            return {}
        return {p: cpu_seconds(p) for p in pids}

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.tail()}" for p in self.processes
                         if p.name != "migrate")

    # --- cleanup

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception as exc:  # pragma: no cover - keep cleaning
                print(f"bench: could not stop {proc.name} {proc.pid}: {exc}", file=sys.stderr)
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        except Exception as exc:
            print(f"bench: could not drop database {self.db}: {exc}", file=sys.stderr)
        if self.redis_proc is None and getattr(self, "redis", None) is not None:
            try:
                self.redis.flushdb()
                self.redis.close()
            except Exception as exc:
                print(f"bench: could not flush {self.redis_url}: {exc}", file=sys.stderr)
        if self.keep_logs:
            print(f"bench: logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self in _open_stacks:
            _open_stacks.remove(self)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and exc_type is not KeyboardInterrupt:
            print(self.log_tails()[-4000:], file=sys.stderr)
        self.close()


def http_session(pool: int = 10) -> requests.Session:
    session = requests.Session()
    session.trust_env = False      # only ever 127.0.0.1: no proxies
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    return session


ORDER = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "0.01", "slippageBps": 100}
