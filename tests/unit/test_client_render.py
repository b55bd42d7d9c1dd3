"""The client's lines: every event kind, from fixed event objects, to the line a person reads."""
from __future__ import annotations

from orderengine.client.render import EventFormatter, orders_table
from orderengine.client.view import console_for

ORDER_ID = "0b8f6f3e-8c55-4a4e-9a53-6f0f7c0f1a11"


def event(seq: int, status: str, data: dict, attempt: int = 1) -> dict:
    return {"orderId": ORDER_ID, "seq": seq, "status": status, "at": f"2026-11-26T10:00:0{seq}.123Z",
            "attempt": attempt, "data": data}


PENDING = event(1, "pending", {"type": "MARKET", "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1.5",
                               "slippageBps": 50, "clientOrderId": "mine-7"}, attempt=0)
ROUTING = event(2, "routing", {"venues": ["meteora", "raydium"]})
BUILDING = event(3, "building", {
    "quotes": [
        {"venue": "meteora", "pool": "P1", "amountOut": "224.385326", "fee": "0.001206975", "feeToken": "SOL",
         "netOut": "224.385326", "price": "149.59", "priceImpactPct": "0"},
        {"venue": "raydium", "pool": "P2", "amountOut": "224.483254", "fee": "0.00375", "feeToken": "SOL",
         "netOut": "224.483254", "price": "149.65", "priceImpactPct": "0.001"},
        {"venue": "orca", "error": {"code": "QUOTE_TIMEOUT", "message": "No quote within 2000 ms."}},
    ],
    "venue": "raydium", "pool": "P2", "expectedOut": "224.483254", "minAmountOut": "223.360837", "plan": []})
SUBMITTED = event(4, "submitted", {"venue": "raydium", "txHash": "4CsxZPUn24KQ"})
CONFIRMED = event(5, "confirmed", {"venue": "raydium", "txHash": "4CsxZPUn24KQ", "amountOut": "224.380976",
                                   "executedPrice": "149.587317333333", "fee": "0.00375"})
RETRYING = event(5, "retrying", {"attempt": 1, "error": {"code": "TX_FAILED", "message": "The transaction "
                                 "failed on chain."}, "retryInMs": 500})
FAILED = event(9, "failed", {"error": {"code": "SLIPPAGE_EXCEEDED", "message": "Paid below the minimum."},
                             "attempts": 3}, attempt=3)
CANCELLED = event(3, "cancelled", {"reason": "Cancelled at the client's request."})


def lines(*events: dict) -> list[str]:
    formatter = EventFormatter()
    return [formatter.line(e).plain for e in events]


def test_the_happy_path_reads_as_one_line_per_event_with_the_decision_and_the_fill():
    assert lines(PENDING, ROUTING, BUILDING, SUBMITTED, CONFIRMED) == [
        "10:00:01.123  #1   pending    MARKET 1.5 SOL → USDC, slippage 50 bps, clientOrderId mine-7",
        "10:00:02.123  #2   routing    attempt 1, asking meteora, raydium",
        "10:00:03.123  #3   building   venue raydium, expectedOut 224.483254 USDC,"
        " minAmountOut 223.360837 USDC"
        " | quotes: meteora amountOut 224.385326 fee 0.001206975 SOL netOut 224.385326;"
        " raydium amountOut 224.483254 fee 0.00375 SOL netOut 224.483254;"
        " orca error QUOTE_TIMEOUT: No quote within 2000 ms.",
        "10:00:04.123  #4   submitted  venue raydium, txHash 4CsxZPUn24KQ",
        "10:00:05.123  #5   confirmed  amountOut 224.380976 USDC, executedPrice 149.587317333333,"
        " fee 0.00375 SOL (venue raydium, txHash 4CsxZPUn24KQ)",
    ]


def test_a_retry_says_which_attempt_failed_why_and_when_the_next_starts():
    assert lines(RETRYING) == [
        "10:00:05.123  #5   retrying   attempt 1 failed: TX_FAILED: The transaction failed on chain.;"
        " retry in 500 ms"]


def test_a_failure_gives_the_error_code_message_and_attempts():
    assert lines(FAILED) == [
        "10:00:09.123  #9   failed     SLIPPAGE_EXCEEDED: Paid below the minimum. (attempts 3)"]


def test_a_cancellation_gives_the_reason():
    assert lines(CANCELLED) == ["10:00:03.123  #3   cancelled  reason: Cancelled at the client's request."]


def test_without_the_pending_event_amounts_are_shown_without_a_token():
    assert lines(CONFIRMED)[0].endswith(
        "confirmed  amountOut 224.380976, executedPrice 149.587317333333, fee 0.00375 (venue raydium, "
        "txHash 4CsxZPUn24KQ)")


def test_a_status_this_client_does_not_know_still_shows_its_data():
    assert lines(event(6, "settling", {"venue": "raydium"})) == [
        "10:00:06.123  #6   settling   venue raydium"]


def test_the_orders_table_has_a_row_per_order_with_the_full_id_and_error_code(tmp_path):
    orders = [{"orderId": ORDER_ID, "tokenIn": "SOL", "tokenOut": "USDC", "amountIn": "1", "status": "failed",
               "attempts": 3, "venue": "raydium", "amountOut": None, "createdAt": "2026-11-26T10:00:00.000Z",
               "error": {"code": "TX_FAILED", "message": "…"}}]
    with open(tmp_path / "out.txt", "w") as stream:
        console_for(stream).print(orders_table(orders))
    header, row = (tmp_path / "out.txt").read_text().splitlines()
    assert header.split() == ["createdAt", "orderId", "status", "pair", "amountIn", "amountOut", "venue",
                              "attempts", "error"]
    assert row.split() == ["2026-11-26T10:00:00.000Z", ORDER_ID, "failed", "SOL→USDC", "1", "raydium", "3",
                           "TX_FAILED"]
    assert "\x1b[" not in header + row   # not a terminal: no ANSI codes


def test_on_a_terminal_a_spinner_shows_the_current_status_and_elapsed_time_and_on_a_pipe_nothing(tmp_path):
    from io import StringIO

    from rich.console import Console

    from orderengine.client.follow import Event
    from orderengine.client.view import HumanView

    screen = Console(file=StringIO(), force_terminal=True, width=200)
    with HumanView(screen, screen) as view:
        assert view.live is not None
        view.event(Event(SUBMITTED, ""))
        plain = Console(file=StringIO(), width=200)
        plain.print(view.waiting)
    status_line = plain.file.getvalue().strip()
    assert status_line.split()[1:] == ["submitted", status_line.split()[2]]
    assert status_line.split()[2].endswith("s") and float(status_line.split()[2][:-1]) >= 0

    with open(tmp_path / "pipe.txt", "w") as stream:
        with HumanView(console_for(stream), console_for(stream)) as piped:
            assert piped.live is None
            piped.event(Event(SUBMITTED, ""))
    assert (tmp_path / "pipe.txt").read_text() == lines(SUBMITTED)[0] + "\n"
