"""The end-to-end harness: the real commands, started as processes, spoken to over HTTP and WebSocket.

Every process runs the executables of the venv that runs pytest, from a throwaway working
directory (so a developer's `.env` is not read), with PYTHONPATH and every orderengine variable
of the caller's environment removed. Its output goes to a file under tmp_path; when a test
fails, the tail of each file is attached to the report.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from orderengine.config import VARIABLES

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent          # the venv that runs the tests: CI's clone uses its own
ORDERENGINE = str(BIN / "orderengine")
GUNICORN = str(BIN / "gunicorn")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 25
LOG_TAIL_CHARS = 6000

#: latencies for tests that are not about latency, and recovery that happens within seconds
FAST = {
    "LOG_LEVEL": os.environ.get("E2E_LOG_LEVEL", "WARNING"),   # E2E_LOG_LEVEL=DEBUG to see more
    "MOCK_QUOTE_LATENCY_MS": "10",
    "MOCK_EXEC_LATENCY_MS": "300",
    "MOCK_FAIL_RATE": "0",
    "SWEEP_INTERVAL_MS": "500",
    "WORKER_DEAD_AFTER_MS": "3000",
    "WEB_THREADS": "1000",
    # one client address sends every order and socket of a test: SPEC §6's limits are out of the
    # way unless a test is about them (and sets them)
    "RATE_LIMIT_PER_MINUTE": "1000000",
    "MAX_SOCKETS_PER_KEY": "100000",
}

ORDER = {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "slippageBps": 100}


# --- processes ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environ(**values: str) -> dict[str, str]:
    """The caller's environment without anything that would steer the engine, plus `values`."""
    env = {k: v for k, v in os.environ.items()
           if k not in VARIABLES and k != "PYTHONPATH" and not k.lower().endswith("_proxy")}
    env.update(FAST)
    env.update({k: str(v) for k, v in values.items()})
    return env


class Process:
    """One started command: its own session (so a crash can take its children too) and log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL for the whole group if it has not exited in `timeout`."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the process and every process it started: a crash, nothing runs on."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(10)

    def tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return text[-chars:] or "(empty)"


class Harness:
    """Starts processes for one test and always stops them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.cwd = tmp_path / "cwd"
        self.cwd.mkdir(exist_ok=True)
        self.processes: list[Process] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        log = self.tmp_path / f"{name}-{len(self.processes)}.log"
        # gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl),
        # which every gunicorn on the machine would fight over: give each test its own
        env = dict(env, XDG_RUNTIME_DIR=str(self.tmp_path))
        proc = Process(name, argv, env, self.cwd, log)
        self.processes.append(proc)
        return proc

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float = 60) -> None:
        """Run a command to its end; it must succeed."""
        proc = self.start(name, argv, env)
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{name} did not finish in {timeout} s:\n{proc.tail()}")
        assert code == 0, f"{name} exited with {code}:\n{proc.tail()}"

    def start_http(self, name: str, argv: list[str], env: dict[str, str]) -> "Server":
        proc = self.start(name, argv, env)
        server = Server(proc, f"http://127.0.0.1:{env['PORT']}")
        server.wait_healthy()
        return server

    # the commands under test

    def serve(self, env: dict[str, str]) -> "Server":
        return self.start_http("serve", [ORDERENGINE, "serve"], env)

    def migrate(self, env: dict[str, str]) -> None:
        self.run("migrate", [ORDERENGINE, "migrate"], env)

    def gunicorn(self, env: dict[str, str]) -> "Server":
        return self.start_http("gunicorn", [GUNICORN, "wsgi:app", "-c", str(REPO / "gunicorn.conf.py")], env)

    def worker(self, env: dict[str, str], wait_for: Callable[[int], bool] | None = None) -> Process:
        """`orderengine worker`; with `wait_for`, wait until it says (by its pid) it is up."""
        proc = self.start("worker", [ORDERENGINE, "worker"], env)
        if wait_for is not None:
            eventually(lambda: wait_for(proc.pid) or _exited(proc), START_TIMEOUT_S,
                       f"worker {proc.pid} did not start", proc)
            assert proc.running, f"worker exited with {proc.popen.returncode}:\n{proc.tail()}"
        return proc

    def redis_server(self, port: int, *extra: str) -> Process:
        """A private redis-server; `extra` arguments go on its command line (e.g. --requirepass PW)."""
        proc = self.start("redis", [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--daemonize", "no", *extra], dict(os.environ))
        eventually(lambda: _tcp_open(port) or _exited(proc), 10, "redis-server did not start", proc)
        assert proc.running, proc.tail()
        return proc

    def close(self) -> None:
        """SIGTERM to every process at once, then wait for each (SIGKILL at the deadline)."""
        running = [proc for proc in self.processes if proc.running]
        for proc in running:
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in running:
            try:
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.processes:
            proc.kill()

    def log_sections(self) -> Iterable[tuple[str, str]]:
        """(title, tail) of every process this harness started, for a failing test's report."""
        for proc in self.processes:
            yield f"{proc.name} (pid {proc.pid}, {proc.log.name})", proc.tail()


REDIS_SERVER = shutil.which("redis-server")


def _exited(proc: Process) -> bool:
    return not proc.running


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Server:
    """A process that answers HTTP."""

    def __init__(self, proc: Process, base_url: str) -> None:
        self.proc = proc
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://", 1)
        self.http = requests.Session()
        self.http.trust_env = False   # no proxies: only ever 127.0.0.1

    def log_sections(self) -> Iterable[tuple[str, str]]:
        yield f"{self.proc.name} (pid {self.proc.pid}, {self.proc.log.name})", self.proc.tail()

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        def healthy() -> bool:
            if not self.proc.running:
                pytest.fail(f"{self.proc.name} exited with {self.proc.popen.returncode} before it was "
                            f"healthy:\n{self.proc.tail()}")
            try:
                return self.http.get(self.base_url + "/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        eventually(healthy, timeout, f"{self.proc.name} did not answer GET /health with 200", self.proc)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.base_url + path, timeout=kwargs.pop("timeout", 15), **kwargs)

    def post_order(self, **changes: Any) -> str:
        """POST a MARKET order; it must be accepted. Returns its id."""
        response = self.http.post(self.base_url + "/api/orders/execute", json={**ORDER, **changes},
                                  timeout=15)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "pending"
        return body["orderId"]

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.get(f"/api/orders/{order_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, order_id: str, since: int = 0) -> list[dict[str, Any]]:
        response = self.get(f"/api/orders/{order_id}/events", params={"since": since} if since else None)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_status(self, order_ids: Iterable[str], statuses: set[str],
                        timeout: float) -> dict[str, dict]:
        """Poll until every order's snapshot has one of `statuses`; return the snapshots."""
        ids = list(order_ids)
        seen: dict[str, dict] = {}

        def reached() -> bool:
            for order_id in ids:
                if seen.get(order_id, {}).get("status") not in statuses:
                    seen[order_id] = self.order(order_id)
            return all(seen[i]["status"] in statuses for i in ids)

        eventually(reached, timeout, lambda: f"orders not {sorted(statuses)}: " + json.dumps(
            {i: s["status"] for i, s in seen.items() if s["status"] not in statuses}), self.proc)
        return seen

    def wait_for_event(self, order_ids: Iterable[str], status: str, timeout: float) -> None:
        """Poll GET /events until every order has an event with `status`."""
        pending = set(order_ids)

        def reached() -> bool:
            for order_id in list(pending):
                if any(e["status"] == status for e in self.events(order_id)):
                    pending.discard(order_id)
            return not pending

        eventually(reached, timeout, lambda: f"{len(pending)} orders have no {status!r} event", self.proc)

    def read_socket(self, query: str, timeout: float = 20) -> tuple[list[Any], int | None]:
        return read_socket(f"{self.ws_url}/api/orders/execute?{query}", timeout)


def eventually(condition: Callable[[], bool], timeout: float, message: str | Callable[[], str],
               proc: Process | None = None, interval: float = 0.1) -> None:
    """Poll `condition` until it holds; fail with `message` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            if proc is not None:
                text += f"\n--- {proc.name} log ---\n{proc.tail()}"
            pytest.fail(f"{text} (after {timeout} s)")
        time.sleep(interval)


def read_socket(url: str, timeout: float = 20) -> tuple[list[Any], int | None]:
    """Read a WebSocket to its close: (the JSON messages received, the close code)."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    with connect(url, open_timeout=10, close_timeout=5, proxy=None) as ws:
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{url} did not close within {timeout} s; got {messages}")
                try:
                    messages.append(json.loads(ws.recv(timeout=remaining)))
                except TimeoutError:
                    continue
        except ConnectionClosed as closed:
            return messages, (closed.rcvd.code if closed.rcvd is not None else None)


def parse_at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
