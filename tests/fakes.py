"""Fakes over mocks: an in-memory venue that keeps a real ledger of what it filled."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from orderengine.errors import InsufficientLiquidity, NoRoute, TransactionFailed
from orderengine.plugins import VenueRegistry
from orderengine.tokens import Token
from orderengine.venue import PoolInfo, Quote, SwapRequest, TxState, TxStatus, Venue


class FakeClock:
    """A UTC clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)


class FakeVenue(Venue):
    """Pays `price` per unit less `fee_pct`; fills on the first status query after
    `confirm_after` queries. `fail_sends` makes execute raise after recording the
    transaction (the send's outcome is unknown to the caller); `fail_tx` makes
    transactions fail on chain; `quote_delay` simulates a slow venue."""

    def __init__(self, name: str, price: str = "150", fee_pct: str = "0.25", *,
                 fail_tx: int = 0, fail_sends: int = 0, quote_delay: float = 0.0,
                 quote_error: Exception | None = None, confirm_after: int = 0,
                 max_in: str | None = None, tx_error: str = "TX_FAILED", refuse_sends: int = 0) -> None:
        self.name = name
        self.price = Decimal(price)
        self.fee_pct = Decimal(fee_pct)
        self.fail_tx = fail_tx
        self.fail_sends = fail_sends
        self.quote_delay = quote_delay
        self.quote_error = quote_error
        self.confirm_after = confirm_after
        self.max_in = Decimal(max_in) if max_in else None
        self.tx_error = tx_error
        self.refuse_sends = refuse_sends  # execute raises before recording anything
        self.confirmation_hint_ms = 0
        self.sent: dict[str, dict] = {}      # client_tx_id -> tx
        self.executions = 0                  # calls to execute, duplicates included
        self.lock = threading.Lock()

    def pools(self) -> list[PoolInfo]:
        return [PoolInfo(f"{self.name}-pool", "SOL", "USDC", self.fee_pct, self.price)]

    def quote(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Quote:
        if self.quote_delay:
            time.sleep(self.quote_delay)
        if self.quote_error is not None:
            raise self.quote_error
        if {token_in.symbol, token_out.symbol} != {"SOL", "USDC"}:
            raise NoRoute(f"{self.name} has no pool for {token_in.symbol}/{token_out.symbol}")
        if self.max_in is not None and amount_in > self.max_in:
            raise InsufficientLiquidity("not enough liquidity")
        fee = amount_in * self.fee_pct / 100
        rate = self.price if token_in.symbol == "SOL" else 1 / self.price
        out = ((amount_in - fee) * rate).quantize(token_out.quantum, rounding="ROUND_DOWN")
        return Quote(self.name, f"{self.name}-pool", token_in, token_out, amount_in, out, fee,
                     token_in, out / amount_in, Decimal("0.01"))

    def execute(self, swap: SwapRequest, client_tx_id: str) -> str:
        with self.lock:
            self.executions += 1
            if self.refuse_sends > 0:
                self.refuse_sends -= 1
                raise TransactionFailed("simulation rejected the transaction")
            tx = self.sent.get(client_tx_id)
            if tx is None:
                quote = self.quote(swap.token_in, swap.token_out, swap.amount_in)
                failed = self.fail_tx > 0
                if failed:
                    self.fail_tx -= 1
                tx = {"signature": f"sig-{client_tx_id}", "amount_in": swap.amount_in,
                      "amount_out": quote.amount_out, "fee": quote.fee, "polls": 0,
                      "fails": failed or quote.amount_out < swap.min_amount_out}
                self.sent[client_tx_id] = tx
            if self.fail_sends > 0:
                self.fail_sends -= 1
                raise ConnectionError("connection reset while sending")
            return tx["signature"]

    def status(self, signature: str) -> TxStatus:
        with self.lock:
            for tx in self.sent.values():
                if tx["signature"] == signature:
                    return self._state(tx)
        return TxStatus(TxState.UNKNOWN)

    def lookup(self, client_tx_id: str) -> TxStatus:
        with self.lock:
            tx = self.sent.get(client_tx_id)
            return self._state(tx) if tx else TxStatus(TxState.UNKNOWN)

    def _state(self, tx: dict) -> TxStatus:
        tx["polls"] += 1
        if tx["polls"] <= self.confirm_after:
            return TxStatus(TxState.PENDING, tx["signature"])
        if tx["fails"]:
            return TxStatus(TxState.FAILED, tx["signature"], error_code=self.tx_error,
                            error_message="simulated failure")
        return TxStatus(TxState.CONFIRMED, tx["signature"], tx["amount_in"], tx["amount_out"], tx["fee"])

    @property
    def fills(self) -> int:
        return sum(1 for tx in self.sent.values() if not tx["fails"])


def registry_of(*venues: Venue) -> VenueRegistry:
    return VenueRegistry(venues={v.name: v for v in venues})


class BrokenSends(FakeVenue):
    """Its `execute` always raises `error` without sending anything; remembers when it was called."""

    def __init__(self, *args, error: Exception | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error = error or ConnectionError("connection reset while sending")
        self.send_times: list[float] = []

    def execute(self, swap: SwapRequest, client_tx_id: str) -> str:
        with self.lock:
            self.executions += 1
            self.send_times.append(time.monotonic())
        raise self.error


class ForgetfulVenue(FakeVenue):
    """Takes every send and gives a signature, then never knows of it again (status and
    lookup say UNKNOWN): a transaction dropped before it landed. Remembers its lookups."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lookup_times: list[datetime] = []

    def execute(self, swap: SwapRequest, client_tx_id: str) -> str:
        with self.lock:
            self.executions += 1
        return f"sig-{client_tx_id}"

    def status(self, signature: str) -> TxStatus:
        return TxStatus(TxState.UNKNOWN, signature)

    def lookup(self, client_tx_id: str) -> TxStatus:
        self.lookup_times.append(datetime.now(timezone.utc))
        return TxStatus(TxState.UNKNOWN)


class HungVenue(FakeVenue):
    """Its execute, status and lookup (and quote, with `hang_quotes`) block until `release`
    is set: a venue whose network hangs. Counts the calls stuck in it right now."""

    def __init__(self, *args, hang_quotes: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.hang_quotes = hang_quotes
        self.stuck = 0
        self.most_stuck = 0

    def _hang(self) -> None:
        with self.lock:
            self.stuck += 1
            self.most_stuck = max(self.most_stuck, self.stuck)
        self.release.wait(30)
        with self.lock:
            self.stuck -= 1

    def quote(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Quote:
        if self.hang_quotes:
            self._hang()
        return super().quote(token_in, token_out, amount_in)

    def execute(self, swap: SwapRequest, client_tx_id: str) -> str:
        self._hang()
        return super().execute(swap, client_tx_id)

    def status(self, signature: str) -> TxStatus:
        self._hang()
        return super().status(signature)

    def lookup(self, client_tx_id: str) -> TxStatus:
        self._hang()
        return super().lookup(client_tx_id)
