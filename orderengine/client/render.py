"""What a person reads: one line per event, and the orders table. Pure functions of the objects
the API sends (amounts are shown exactly as the server wrote them)."""
from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "pending": "cyan", "routing": "cyan", "building": "blue", "submitted": "magenta",
    "confirmed": "bold green", "retrying": "yellow", "failed": "bold red", "cancelled": "bold red",
}
STATUS_WIDTH = 9   # len("submitted"), the longest status


class EventFormatter:
    """Turns events into lines; remembers what later lines need (the tokens, the fee's token)."""

    def __init__(self, token_in: str | None = None, token_out: str | None = None) -> None:
        self.token_in = token_in
        self.token_out = token_out
        self.fee_token: str | None = None

    def line(self, event: dict[str, Any]) -> Text:
        """`HH:MM:SS.mmm  #seq status  details` for one event."""
        status = str(event.get("status"))
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        describe = getattr(self, f"_{status}", None)
        details = describe(data, event) if describe else _compact(data)
        return Text.assemble(
            (_clock(event.get("at")), "dim"), "  ", (f"#{event.get('seq')}".ljust(4), "dim"), " ",
            (status.ljust(STATUS_WIDTH), STATUS_STYLES.get(status, "")), "  ", details)

    def _pending(self, data: dict, event: dict) -> str:
        self.token_in = data.get("tokenIn") or self.token_in
        self.token_out = data.get("tokenOut") or self.token_out
        text = (f"{data.get('type', 'MARKET')} {data.get('amountIn')} {self.token_in} → {self.token_out}, "
                f"slippage {data.get('slippageBps')} bps")
        if data.get("clientOrderId"):
            text += f", clientOrderId {data['clientOrderId']}"
        return text

    def _routing(self, data: dict, event: dict) -> str:
        venues = data.get("venues")
        asking = f", asking {', '.join(map(str, venues))}" if isinstance(venues, list) else ""
        return f"attempt {event.get('attempt')}{asking}"

    def _building(self, data: dict, event: dict) -> str:
        quotes = [q for q in data.get("quotes") or [] if isinstance(q, dict)]
        chosen = next((q for q in quotes if q.get("venue") == data.get("venue") and "error" not in q), {})
        self.fee_token = chosen.get("feeToken") or self.fee_token
        head = (f"venue {data.get('venue')}, expectedOut {self._out(data.get('expectedOut'))}, "
                f"minAmountOut {self._out(data.get('minAmountOut'))}")
        return head + " | quotes: " + "; ".join(_quote(q) for q in quotes) if quotes else head

    def _submitted(self, data: dict, event: dict) -> str:
        return f"venue {data.get('venue')}, txHash {data.get('txHash')}"

    def _confirmed(self, data: dict, event: dict) -> str:
        return (f"amountOut {self._out(data.get('amountOut'))}, executedPrice {data.get('executedPrice')}, "
                f"fee {_amount(data.get('fee'), self.fee_token)} (venue {data.get('venue')}, "
                f"txHash {data.get('txHash')})")

    def _retrying(self, data: dict, event: dict) -> str:
        return (f"attempt {data.get('attempt', event.get('attempt'))} failed: {_error(data.get('error'))}; "
                f"retry in {data.get('retryInMs')} ms")

    def _failed(self, data: dict, event: dict) -> str:
        return f"{_error(data.get('error'))} (attempts {data.get('attempts')})"

    def _cancelled(self, data: dict, event: dict) -> str:
        return f"reason: {data.get('reason')}"

    def _out(self, amount: Any) -> str:
        return _amount(amount, self.token_out)


def _quote(quote: dict) -> str:
    if "error" in quote:
        return f"{quote.get('venue')} error {_error(quote['error'])}"
    return (f"{quote.get('venue')} amountOut {quote.get('amountOut')} "
            f"fee {_amount(quote.get('fee'), quote.get('feeToken'))} netOut {quote.get('netOut')}")


def _error(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return str(error)


def _amount(amount: Any, token: str | None) -> str:
    return f"{amount} {token}" if token else str(amount)


def _clock(at: Any) -> str:
    """The time of day of an ISO timestamp (the server's UTC), as sent:
    2026-…T10:00:00.123Z → 10:00:00.123."""
    text = str(at or "")
    return text.partition("T")[2].rstrip("Z")[:12] or "--:--:--.---"


def _compact(data: dict) -> str:
    """A status this client does not know yet: its data, so nothing is hidden."""
    return ", ".join(f"{k} {v}" for k, v in data.items())


ORDER_COLUMNS = ("createdAt", "orderId", "status", "pair", "amountIn", "amountOut", "venue", "attempts",
                 "error")


def orders_table(orders: list[dict[str, Any]]) -> Table:
    """The orders as a table, newest first as the API lists them."""
    table = Table(*ORDER_COLUMNS, box=None, header_style="bold", pad_edge=False)
    for order in orders:
        status = str(order.get("status"))
        error = order.get("error")
        table.add_row(
            str(order.get("createdAt", "")), str(order.get("orderId", "")),
            Text(status, STATUS_STYLES.get(status, "")), f"{order.get('tokenIn')}→{order.get('tokenOut')}",
            str(order.get("amountIn", "")), str(order.get("amountOut") or ""), str(order.get("venue") or ""),
            str(order.get("attempts", "")), str(error.get("code")) if isinstance(error, dict) else "")
    return table
