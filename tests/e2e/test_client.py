"""`orderengine order | watch | orders` as a user runs them, against a live `orderengine serve`."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.e2e.harness import ORDERENGINE, Harness, clean_environ, eventually, free_port

pytestmark = pytest.mark.e2e

LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]
RUN_TIMEOUT_S = 60


def serve_env(tmp_path, **values) -> dict[str, str]:
    return clean_environ(PORT=free_port(), DATABASE_URL=f"sqlite:///{tmp_path}/orderengine.db", **values)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("client")
    harness = Harness(tmp_path)
    try:
        yield harness.serve(serve_env(tmp_path))
    finally:
        harness.close()


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory):
    """Every simulated transaction fails, and one attempt is all an order gets."""
    tmp_path = tmp_path_factory.mktemp("client-failing")
    harness = Harness(tmp_path)
    try:
        yield harness.serve(serve_env(tmp_path, MOCK_FAIL_RATE=1, MAX_ATTEMPTS=1))
    finally:
        harness.close()


def cli(*args: str, url: str | None, cwd, **env: str) -> subprocess.CompletedProcess:
    """Run the client to its end, stdout a pipe (as a script sees it)."""
    environ = clean_environ(**env)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):   # would make rich colour a pipe
        environ.pop(name, None)
    if url is not None:
        environ["ORDERENGINE_URL"] = url
    return subprocess.run([ORDERENGINE, *args], env=environ, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def event_statuses(stdout: str) -> list[str]:
    """The status of each event line (`HH:MM:SS.mmm  #seq status  …`)."""
    return [line.split()[2] for line in stdout.splitlines() if line[:1].isdigit()]


def test_order_prints_a_line_per_event_from_pending_to_confirmed_and_exits_0(server, tmp_path):
    result = cli("order", "SOL", "USDC", "1.25", "--slippage-bps", "100", url=server.base_url, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    order_id = first.split()[1]
    assert first == f"order {order_id} accepted"
    assert event_statuses(result.stdout) == LIFECYCLE
    assert len(rest) == len(LIFECYCLE)            # one line per event, nothing else
    confirmed = server.order(order_id)
    assert confirmed["status"] == "confirmed"
    assert f"amountOut {confirmed['amountOut']} USDC" in rest[-1]
    assert f"txHash {confirmed['txHash']}" in rest[3]
    assert "\x1b[" not in result.stdout           # a pipe: no colour, no spinner


def test_order_json_prints_the_accepted_answer_then_every_event_with_gapless_seq(server, tmp_path):
    result = cli("order", "SOL", "USDC", "0.5", "--json", url=server.base_url, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    accepted, *events = [json.loads(line) for line in result.stdout.splitlines()]
    assert accepted["status"] == "pending"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["status"] for e in events] == LIFECYCLE
    assert {e["orderId"] for e in events} == {accepted["orderId"]}
    assert events == server.events(accepted["orderId"])


def test_the_same_idempotency_key_places_the_order_once_and_shows_it_again(server, tmp_path):
    key = f"cli-{uuid.uuid4()}"
    argv = ["order", "SOL", "USDC", "0.2", "--client-order-id", key[:20], "--idempotency-key", key]

    first = cli(*argv, url=server.base_url, cwd=tmp_path)
    again = cli(*argv, url=server.base_url, cwd=tmp_path)

    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    order_id = first.stdout.split()[1]
    assert again.stdout.splitlines()[0] == (f"order {order_id} accepted (Idempotency-Key seen before: "
                                            "this is the order it made)")
    assert event_statuses(again.stdout) == LIFECYCLE     # replayed from the log
    listed = server.get("/api/orders", params={"clientOrderId": key[:20]}).json()["orders"]
    assert [o["orderId"] for o in listed] == [order_id]


def test_a_reader_that_stops_reading_ends_the_client_quietly(server, tmp_path):
    client = subprocess.Popen([ORDERENGINE, "order", "SOL", "USDC", "0.3", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=dict(clean_environ(), ORDERENGINE_URL=server.base_url))
    try:
        accepted = json.loads(client.stdout.readline())
        client.stdout.close()                      # as `| head -1` does
        _, stderr = client.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 141
    assert "Traceback" not in stderr and "Exception" not in stderr
    server.wait_for_status([accepted["orderId"]], {"confirmed"}, timeout=20)   # the order goes on


def test_the_default_url_is_127_0_0_1_on_the_engines_PORT(server, tmp_path):
    port = server.base_url.rsplit(":", 1)[1]

    result = cli("order", "SOL", "USDC", "0.1", url=None, cwd=tmp_path, PORT=port)

    assert result.returncode == 0, result.stderr


def test_an_order_that_fails_exits_1_with_the_error_code(failing_server, tmp_path):
    result = cli("order", "SOL", "USDC", "1", url=failing_server.base_url, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    statuses = event_statuses(result.stdout)
    assert statuses[0] == "pending" and statuses[-1] == "failed"
    assert "TX_FAILED" in result.stdout.splitlines()[-1]


def test_watch_of_a_finished_order_replays_it_and_exits_0(server, tmp_path):
    order_id = server.post_order()
    server.wait_for_status([order_id], {"confirmed"}, timeout=20)

    human = cli("watch", order_id, url=server.base_url, cwd=tmp_path)
    machine = cli("watch", order_id, "--since", "2", "--json", url=server.base_url, cwd=tmp_path)

    assert human.returncode == 0, human.stderr
    assert event_statuses(human.stdout) == LIFECYCLE
    assert machine.returncode == 0, machine.stderr
    assert [json.loads(line)["seq"] for line in machine.stdout.splitlines()] == [3, 4, 5]


def test_watch_since_the_last_event_says_how_the_order_ended_at_once(server, tmp_path):
    order_id = server.post_order()
    server.wait_for_status([order_id], {"confirmed"}, timeout=20)

    result = cli("watch", order_id, "--since", "5", url=server.base_url, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and "already ended (confirmed)" in result.stderr


def test_watch_of_an_unknown_order_exits_2(server, tmp_path):
    result = cli("watch", str(uuid.uuid4()), url=server.base_url, cwd=tmp_path)

    assert result.returncode == 2
    assert "ORDER_NOT_FOUND" in result.stderr


def test_orders_lists_them_and_all_follows_every_page(server, tmp_path):
    client_order_id = f"cli-{uuid.uuid4().hex[:8]}"
    ids = [server.post_order(clientOrderId=client_order_id) for _ in range(3)]

    table = cli("orders", "--client-order-id", client_order_id, url=server.base_url, cwd=tmp_path)
    one_page = cli("orders", "--client-order-id", client_order_id, "--limit", "2", "--json",
                   url=server.base_url, cwd=tmp_path)
    every_page = cli("orders", "--client-order-id", client_order_id, "--limit", "1", "--all", "--json",
                     url=server.base_url, cwd=tmp_path)

    assert table.returncode == 0, table.stderr
    assert [line.split()[1] for line in table.stdout.splitlines()[1:]] == ids[::-1]   # newest first
    assert [json.loads(line)["orderId"] for line in one_page.stdout.splitlines()] == ids[:0:-1]
    assert "--all" in one_page.stderr
    assert [json.loads(line)["orderId"] for line in every_page.stdout.splitlines()] == ids[::-1]


@pytest.mark.parametrize("argv, message", [
    (["order", "SOL", "USDC", "abc"], "amountIn: Not a valid amount"),
    (["order", "SOL", "DOGE", "1"], "tokenOut: Unknown token 'DOGE'"),
    (["orders", "--status", "lost"], "status: Must be one of"),
])
def test_input_the_server_refuses_exits_2_with_its_validation_message(server, tmp_path, argv, message):
    result = cli(*argv, url=server.base_url, cwd=tmp_path)

    assert result.returncode == 2
    assert "VALIDATION_ERROR" in result.stderr and message in result.stderr
    assert result.stdout == ""


def test_a_url_with_nothing_listening_exits_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"

    result = cli("order", "SOL", "USDC", "1", url=url, cwd=tmp_path)

    assert result.returncode == 2
    assert f"cannot reach {url}" in result.stderr


def test_order_survives_a_server_crash_and_restart_by_reconnecting_after_the_last_event(harness, tmp_path):
    env = serve_env(tmp_path, MOCK_EXEC_LATENCY_MS=4000)
    url = f"http://127.0.0.1:{env['PORT']}"
    first = harness.serve(env)
    out = tmp_path / "client.out"
    with open(out, "w") as stdout:
        client = subprocess.Popen([ORDERENGINE, "order", "SOL", "USDC", "1", "--json"], stdout=stdout,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                  env=dict(clean_environ(), ORDERENGINE_URL=url))
    try:
        eventually(lambda: '"submitted"' in out.read_text(), 20, "the client did not show submitted")
        first.proc.kill()                          # a crash: the socket drops mid-order
        harness.serve(env)                         # same port, same database
        _, stderr = client.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, stderr
    accepted, *events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["status"] == "confirmed"
    assert "reconnecting" in stderr
