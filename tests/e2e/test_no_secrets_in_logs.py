"""No secret in any log line or response (SPEC §6), with the real processes at LOG_LEVEL=DEBUG.

DATABASE_URL and REDIS_URL carry passwords (PostgreSQL trusts 127.0.0.1 and ignores it; a
private redis-server requires it), every request sends `Authorization: Bearer <token>` and
every socket `?apiKey=<token>` (AUTH=off: the token is checked by nobody, but it must be
logged by nobody either); some requests fail on purpose. Then every log of every process we
started, and every response, is searched for the passwords and the token.
"""
from __future__ import annotations

import socket

import psycopg
import pytest
import requests
from websockets.sync.client import connect

from tests.e2e.harness import ORDER, REDIS_SERVER, clean_environ, eventually, free_port, read_socket

pytestmark = pytest.mark.e2e

DB_PASSWORD = "S3cretPw-db-81f2c"
REDIS_PASSWORD = "S3cretPw-redis-4b7e"
TOKEN = "oe_live_7d1a9c3e5f"
SECRETS = (DB_PASSWORD, REDIS_PASSWORD, TOKEN)


@pytest.fixture
def redis_with_password(harness, redis_server_binary):
    port = free_port()
    harness.redis_server(port, "--requirepass", REDIS_PASSWORD)
    return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"


def worker_is_up(pg_url: str):
    def up(pid: int) -> bool:
        with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as conn:
            return bool(conn.execute("SELECT 1 FROM workers WHERE host = %s AND pid = %s",
                                     (socket.gethostname(), pid)).fetchall())
    return up


def test_no_password_or_api_key_reaches_a_log_or_a_response(harness, pg_url, redis_with_password, tmp_path):
    database_url = pg_url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    assert DB_PASSWORD in database_url
    # an operator who turns gunicorn's access log on gets every request line, query included
    env = clean_environ(DATABASE_URL=database_url, REDIS_URL=redis_with_password, PORT=free_port(),
                        WEB_CONCURRENCY=1, LOG_LEVEL="DEBUG", AUTH="off",
                        GUNICORN_CMD_ARGS="--access-logfile - --log-level debug")
    harness.migrate(env)
    api = harness.gunicorn(env)
    harness.worker(env, wait_for=worker_is_up(pg_url.replace("postgresql+psycopg://", "postgresql://")))
    bodies: list[str] = []
    http = api.http
    http.headers["Authorization"] = f"Bearer {TOKEN}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        response = http.request(method, api.base_url + path, timeout=15, **kwargs)
        bodies.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    created = call("POST", f"/api/orders/execute?apiKey={TOKEN}", json=ORDER,
                   headers={"Idempotency-Key": f"key-{TOKEN}"})
    assert created.status_code == 201
    order_id = created.json()["orderId"]
    assert call("POST", "/api/orders/execute", json={**ORDER, "amountIn": TOKEN}).status_code == 400
    assert call("POST", "/api/orders/execute", data=f"apiKey={TOKEN}",
                headers={"Content-Type": "text/plain"}).status_code == 415
    assert call("GET", f"/api/orders/{order_id[:-1]}0?apiKey={TOKEN}").status_code in (200, 404)
    assert call("GET", f"/api/orders/not-an-id?apiKey={TOKEN}").status_code == 400
    assert call("GET", f"/no/such/path?apiKey={TOKEN}").status_code == 404
    assert call("GET", f"/api/orders?status=bogus&apiKey={TOKEN}").status_code == 400
    assert call("GET", "/health").status_code == 200

    messages, code = read_socket(f"{api.ws_url}/api/orders/execute?orderId={order_id}&apiKey={TOKEN}", 30)
    assert code == 1000 and messages[-1]["status"] == "confirmed"
    bodies.append(repr(messages))
    messages, code = read_socket(f"{api.ws_url}/api/orders/execute?orderId=bad&apiKey={TOKEN}")
    assert code == 4400
    bodies.append(repr(messages))
    with connect(f"{api.ws_url}/api/orders/stream?apiKey={TOKEN}", proxy=None, open_timeout=10,
                 additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send('{"action": "subscribe", "orderId": "%s"}' % TOKEN)
        bodies.append(ws.recv(timeout=10))
        ws.send('{"action": "submit", "order": {"type": "MARKET", "type": "MARKET"}}')
        bodies.append(ws.recv(timeout=10))

    serve_env = clean_environ(DATABASE_URL=database_url, PORT=free_port(), LOG_LEVEL="DEBUG", AUTH="off")
    served = harness.serve(serve_env)  # the embedded server prints its banner with DATABASE_URL
    bodies.append(served.get("/health").text)

    harness.close()  # every process ends and its log is complete
    ours = [p for p in harness.processes if p.name != "redis"]
    logs = {p.log.name: p.log.read_text(errors="replace") for p in ours}
    assert sum(len(text) for text in logs.values()) > 10_000, "DEBUG logs expected"
    assert "postgres:***@127.0.0.1" in logs[served.proc.log.name]
    assert "apiKey=***" in logs[api.proc.log.name]  # the access log has the requests, redacted
    for name, text in logs.items():
        for secret in SECRETS:
            assert secret not in text, f"{name} logged a secret: ...{text[max(0, text.find(secret) - 200):][:400]}"
    for body in bodies:
        for secret in SECRETS:
            assert secret not in body, body[:400]


def test_a_redis_with_a_password_is_really_required(redis_with_password):
    """(the fixture above is what it claims: without the password, Redis refuses)"""
    import redis

    url = redis_with_password.replace(f":{REDIS_PASSWORD}@", "", 1)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
