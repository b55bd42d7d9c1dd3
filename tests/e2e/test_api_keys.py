"""AUTH=keys in production: keys made and revoked with the real `orderengine keys` command,
gunicorn with two processes and a worker on PostgreSQL + Redis. A revoked key is refused by
every process from the next request on; a key never sees another key's orders."""
from __future__ import annotations

import http.client
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.harness import ORDER, ORDERENGINE, Harness, clean_environ, free_port, read_socket

pytestmark = pytest.mark.e2e

PROCESSES = 2


def keys_command(harness: Harness, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([ORDERENGINE, "keys", *args], env=env, cwd=harness.cwd, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def create_key(harness: Harness, env: dict[str, str], name: str) -> str:
    return keys_command(harness, env, "create", name).stdout.splitlines()[-1]


def gunicorn_workers(master_pid: int) -> set[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return {int(pid) for pid in children}


def serving_pid(pids: set[int], client_port: int, server_port: int) -> int | None:
    """Which of `pids` holds the server end of our connection from `client_port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if local == server_port and remote == client_port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            if any(fd.readlink().as_posix() in inodes for fd in fd_dir.iterdir()):
                return pid
        except (FileNotFoundError, PermissionError):
            continue
    return None


def request(port: int, method: str, path: str, key: str | None = None, body: dict | None = None,
            workers: set[int] = frozenset()):
    """One request on a fresh connection: (status, JSON body, which of `workers` answered it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read() or b"null")
        # keep-alive: the connection is still open, so its server end still has an owner
        return response.status, payload, serving_pid(workers, conn.sock.getsockname()[1], port)
    finally:
        conn.close()


def answers_of_every_process(port: int, path: str, key: str, workers: set[int]) -> set[int]:
    """GET `path` on fresh connections until each gunicorn process has answered it 3 times;
    the statuses seen."""
    answered_by: dict[int | None, list[int]] = {}
    for _ in range(300):
        status, _, pid = request(port, "GET", path, key, workers=workers)
        answered_by.setdefault(pid, []).append(status)
        if all(len(answered_by.get(w, [])) >= 3 for w in workers):
            break
    assert set(answered_by) >= workers, f"not every process was reached: {answered_by}"
    return {s for statuses in answered_by.values() for s in statuses}


@pytest.fixture
def deployment(pg_url, harness, private_redis_url):
    env = clean_environ(DATABASE_URL=pg_url, REDIS_URL=private_redis_url, HOST="127.0.0.1", PORT=free_port(),
                        WEB_CONCURRENCY=PROCESSES, AUTH="keys", MOCK_EXEC_LATENCY_MS=300)
    harness.migrate(env)
    api = harness.gunicorn(env)
    harness.worker(env)
    return harness, env, api


def test_a_revoked_key_is_refused_at_once_by_every_gunicorn_process(deployment):
    harness, env, api = deployment
    port = int(env["PORT"])
    alice = create_key(harness, env, "alice")
    status, body, _ = request(port, "POST", "/api/orders/execute", alice, ORDER)
    assert status == 201, body
    order_id = body["orderId"]
    workers = gunicorn_workers(api.proc.pid)
    assert len(workers) == PROCESSES
    before = answers_of_every_process(port, f"/api/orders/{order_id}", alice, workers)
    assert before == {200}, "every process takes the key (and could have remembered it)"

    keys_command(harness, env, "revoke", "alice")

    assert answers_of_every_process(port, f"/api/orders/{order_id}", alice, workers) == {401}
    listed = keys_command(harness, env, "list").stdout
    assert "revoked" in listed and alice[3:] not in listed


def test_a_second_key_cannot_see_the_first_keys_order_anywhere(deployment):
    harness, env, api = deployment
    port = int(env["PORT"])
    alice, bob = create_key(harness, env, "alice"), create_key(harness, env, "bob")
    status, body, _ = request(port, "POST", "/api/orders/execute", alice, ORDER)
    assert status == 201
    order_id = body["orderId"]
    messages, code = read_socket(f"{api.ws_url}/api/orders/execute?orderId={order_id}&apiKey={alice}")
    assert code == 1000 and messages[-1]["status"] == "confirmed"

    missing = str(uuid.uuid4())
    for method, suffix in [("GET", ""), ("GET", "/events"), ("POST", "/cancel")]:
        theirs = request(port, method, f"/api/orders/{order_id}{suffix}", bob)
        nothing = request(port, method, f"/api/orders/{missing}{suffix}", bob)
        assert theirs[0] == nothing[0] == 404
        assert theirs[1] == json.loads(json.dumps(nothing[1]).replace(missing, order_id))
    assert request(port, "GET", "/api/orders", bob)[1] == {"orders": [], "next": None}
    assert [o["orderId"] for o in request(port, "GET", "/api/orders", alice)[1]["orders"]] == [order_id]

    theirs, code = read_socket(f"{api.ws_url}/api/orders/execute?orderId={order_id}&apiKey={bob}")
    assert code == 4404 and theirs[0]["error"]["code"] == "ORDER_NOT_FOUND"
    refused, code = read_socket(f"{api.ws_url}/api/orders/execute?orderId={order_id}")
    assert code == 4401 and refused == [refused[0]] and refused[0]["error"]["code"] == "UNAUTHORIZED"


def test_the_embedded_server_takes_keys_too(harness, tmp_path):
    env = clean_environ(PORT=free_port(), DATABASE_URL=f"sqlite:///{tmp_path}/orderengine.db", AUTH="keys")
    key = create_key(harness, env, "desk")
    server = harness.serve(env)
    port = int(env["PORT"])
    assert request(port, "POST", "/api/orders/execute", None, ORDER)[0] == 401
    status, body, _ = request(port, "POST", "/api/orders/execute", key, ORDER)
    assert status == 201
    messages, code = read_socket(f"{server.ws_url}/api/orders/execute?orderId={body['orderId']}&apiKey={key}")
    assert code == 1000 and messages[-1]["status"] == "confirmed"
    keys_command(harness, env, "revoke", "desk")
    assert request(port, "GET", f"/api/orders/{body['orderId']}", key)[0] == 401
    refused, code = read_socket(f"{server.ws_url}/api/orders/execute?orderId={body['orderId']}&apiKey={key}")
    assert code == 4401 and refused[0]["error"]["code"] == "UNAUTHORIZED"
