"""The ledger every process shares: pools with their program state, and the
transactions sent to them.

It lives in a database, so API servers and workers on any host see one chain.
Time here is lazy: a transaction lands when somebody asks for it after its
confirm time (or when `maintain()` runs), and the due transactions of a pool land
together, in confirm order, each against the state the one before left - as a
leader would execute them. Each process keeps every pool's state in memory,
reloaded (all pools, one query) when older than `state_max_age_ms`: a quote
priced on a state a moment old can only fail on its floor at landing, which is
checked against the real state, never fill wrongly. The engine never reads these
tables; it talks to venues, which talk to this.
"""
from __future__ import annotations

import json
import math
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Collection, Iterable, NamedTuple, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderengine.venue import InsufficientLiquidity, TxState, TxStatus
from venues.chain.addresses import signature_for
from venues.chain.engines import engine_for, normalize_url, writing
from venues.chain.market_clock import MarketClock
from venues.chain.programs import Program, UnknownPool, is_known, program
from venues.chain.tables import insert_ignoring_conflicts, insert_sent, require_tables, sim_pools, sim_transactions
from venues.market import MarketParams

Clock = Callable[[], datetime]

A_TO_B, B_TO_A = "a_to_b", "b_to_a"
SLOT_MS = 400  # Solana's slot time: a transaction's slot follows from when it landed
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
STATE_MAX_AGE_MS = 200
MAINTAIN_MIN_INTERVAL = timedelta(milliseconds=250)  # calls closer than this (two venues) do nothing
PENDING = TxState.PENDING.value


class Send(NamedTuple):
    """One swap to submit, in base units, under a client transaction id."""
    client_tx_id: str
    pool_id: str
    program_name: str
    a_to_b: bool
    amount_in_base: int
    min_out_base: int


class Pool(NamedTuple):
    """A pool as this process last read it (its state is shared: do not change it)."""
    program: str
    version: int
    state: dict[str, Any]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SimChain:
    """Pools, and the transactions sent to them. Thread-safe: one object serves
    every thread of a process (see `get_chain`)."""

    def __init__(self, url: str, *, exec_latency_ms: int = 2500, fail_rate: float = 0.0,
                 seed: int = 7, clock: Clock = utc_now, rng: random.Random | None = None,
                 market: MarketParams | None = None, state_max_age_ms: int = STATE_MAX_AGE_MS) -> None:
        self.url = normalize_url(url)
        self.exec_latency_ms = exec_latency_ms
        self.fail_rate = fail_rate
        self.state_max_age_ms = state_max_age_ms
        self.market = MarketClock(market, seed, clock) if market is not None else None
        self._seed = seed
        self._clock = clock
        self._rng = rng
        self._rng_lock = threading.Lock()
        self._pools: dict[str, Pool] = {}
        self._loaded_at = -math.inf            # time.monotonic() of the last reload
        self._pools_lock = threading.Lock()
        self._maintained_at: datetime | None = None
        self._engine = engine_for(self.url)
        require_tables(self._engine)

    # --- pools ------------------------------------------------------------------------

    def ensure_pool(self, pool_id: str, program_name: str, initial_state: dict[str, Any]) -> None:
        """Create the pool if it is not on the chain yet; an existing pool is left as it
        is. The state must carry `decimals_a` and `decimals_b` besides the program's own."""
        program(program_name)
        with writing(self._engine) as conn:
            conn.execute(insert_ignoring_conflicts(conn, sim_pools).values(
                pool_id=pool_id, program=program_name, version=1,
                state=json.dumps(initial_state, sort_keys=True)))
        with self._pools_lock:
            self._loaded_at = -math.inf

    def pools(self, max_age_ms: float | None = None) -> dict[str, Pool]:
        """Every pool on the chain, as read at most `max_age_ms` ago (default
        `state_max_age_ms`): at most one query, for all pools. Never writes."""
        max_age = self.state_max_age_ms if max_age_ms is None else max_age_ms
        with self._pools_lock:
            if (time.monotonic() - self._loaded_at) * 1000 >= max_age:
                self._reload()
            return dict(self._pools)

    def pool_state(self, pool_id: str) -> dict[str, Any]:
        """The pool's state as this process knows it (see `pools`); UnknownPool if
        there is no such pool. Callers must not change it."""
        known = self.pools()
        if pool_id not in known:  # created since the last reload?
            known = self.pools(max_age_ms=0)
        if pool_id not in known:
            raise UnknownPool(f"no pool {pool_id} on this chain")
        return known[pool_id].state

    # --- transactions -----------------------------------------------------------------

    def send(self, client_tx_id: str, pool_id: str, program_name: str, a_to_b: bool,
             amount_in_base: int, min_out_base: int) -> str:
        """`send_many` of one: the signature, or the per-send error raised."""
        answer = self.send_many([Send(client_tx_id, pool_id, program_name, a_to_b,
                                      amount_in_base, min_out_base)])[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def send_many(self, sends: Sequence[Send]) -> list[str | Exception]:
        """Submit swaps in one statement, each idempotent on its client tx id (a re-send
        returns the first one's signature and changes nothing; a batch naming an id twice
        keeps the first). One answer per send, in order: its signature, or UnknownPool /
        ValueError for a send the chain refuses. Latency and fate are drawn now."""
        now = self._clock()
        pools = self.pools()
        if any(s.pool_id not in pools for s in sends):  # created since the last reload?
            pools = self.pools(max_age_ms=0)
        answers: list[str | Exception] = []
        rows: dict[str, dict[str, Any]] = {}
        for send in sends:
            try:
                answers.append(self._row(send, pools, now, rows))
            except (UnknownPool, ValueError) as error:
                answers.append(error)
        if rows:
            with writing(self._engine) as conn:
                insert_sent(conn, list(rows.values()))
        return answers

    def status(self, signature: str) -> TxStatus:
        return self.statuses([signature])[0]

    def statuses(self, signatures: Sequence[str]) -> list[TxStatus]:
        """Where each transaction stands, in order (UNKNOWN for a signature never sent).
        One read; when some are due to land, every due transaction of their pools lands
        in one write transaction first. A poll that finds nothing due writes nothing."""
        rows = self._current(signatures)
        return [_tx_status(rows[s]) if s in rows else TxStatus(TxState.UNKNOWN, signature=s)
                for s in signatures]

    def lookup(self, client_tx_id: str) -> TxStatus:
        return self.lookups([client_tx_id])[0]

    def lookups(self, client_tx_ids: Sequence[str]) -> list[TxStatus]:
        """`statuses` by client tx id; UNKNOWN (without a signature) when nothing was
        ever sent under the id."""
        found = self.statuses([signature_for(c) for c in client_tx_ids])
        return [s if s.state is not TxState.UNKNOWN else TxStatus(TxState.UNKNOWN) for s in found]

    # --- time passing -----------------------------------------------------------------

    def land_due(self) -> int:
        """Land every transaction due by now, of every pool whose program this process
        knows: one read, and one write transaction when there is something to land.
        Returns how many landed."""
        with self._engine.connect() as conn:
            pool_ids = set(conn.execute(
                sa.select(sim_transactions.c.pool_id).distinct()
                .where(sim_transactions.c.status == PENDING,
                       sim_transactions.c.confirm_at <= self._clock())).scalars())
        return len(self._land(pool_ids)) if pool_ids else 0

    def play_market(self) -> None:
        """Play the market's due ticks, if this process holds the market's lease
        (taking it when it is free or its holder's has run out)."""
        if self.market is None:
            return
        moved = self.market.play_due(self._engine, self._parsed)
        self._remember(moved)

    def maintain(self) -> None:
        """The chain's periodic work, for a background thread about once a second: land
        what is due (so prices show fills nobody has polled for) and play the market's
        ticks under its lease. Calls closer together than 250 ms of chain time (two
        venues on one chain) do nothing."""
        now = self._clock()
        with self._pools_lock:
            if self._maintained_at is not None and now - self._maintained_at < MAINTAIN_MIN_INTERVAL:
                return
            self._maintained_at = now
        self.land_due()
        self.play_market()

    # --- internals --------------------------------------------------------------------

    def _reload(self) -> None:
        """All pools, parsing only the states whose version changed (caller holds the lock)."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(sim_pools.c.pool_id, sim_pools.c.program,
                                          sim_pools.c.version, sim_pools.c.state)).all()
        known = self._pools
        self._pools = {r.pool_id: known[r.pool_id] if r.pool_id in known and known[r.pool_id].version == r.version
                       else Pool(r.program, r.version, json.loads(r.state)) for r in rows}
        self._loaded_at = time.monotonic()

    def _parsed(self, row: Any) -> dict[str, Any]:
        """A pool row's state, reusing what this process parsed at the same version."""
        known = self._pools.get(row.pool_id)
        return known.state if known is not None and known.version == row.version else json.loads(row.state)

    def _remember(self, moved: dict[str, tuple[int, dict[str, Any]]]) -> None:
        """What this process just wrote is the newest state of those pools."""
        if not moved:
            return
        with self._pools_lock:
            for pool_id, (version, state) in moved.items():
                known = self._pools.get(pool_id)
                if known is not None and known.version < version:
                    self._pools[pool_id] = Pool(known.program, version, state)

    def _row(self, send: Send, pools: dict[str, Pool], now: datetime,
             rows: dict[str, dict[str, Any]]) -> str:
        if send.amount_in_base <= 0 or send.min_out_base < 0:
            raise ValueError("amount_in must be positive and min_out not negative")
        pool = pools.get(send.pool_id)
        if pool is None or pool.program != send.program_name:
            raise UnknownPool(f"no {send.program_name} pool {send.pool_id} on this chain")
        signature = signature_for(send.client_tx_id)
        if send.client_tx_id not in rows:
            latency_factor, will_fail = self._draw(send.client_tx_id)
            a, b = pool.state["decimals_a"], pool.state["decimals_b"]
            rows[send.client_tx_id] = dict(
                signature=signature, client_tx_id=send.client_tx_id, pool_id=send.pool_id,
                direction=A_TO_B if send.a_to_b else B_TO_A,
                amount_in=str(send.amount_in_base), min_amount_out=str(send.min_out_base),
                decimals_in=a if send.a_to_b else b, decimals_out=b if send.a_to_b else a,
                status=PENDING, will_fail=will_fail,
                confirm_at=now + timedelta(milliseconds=self.exec_latency_ms * latency_factor),
                created_at=now)
        return signature

    def _draw(self, client_tx_id: str) -> tuple[float, bool]:
        """(latency factor, will fail). Without an injected rng the draw is a function
        of the seed and the id: independent across transactions, equal across processes."""
        if self._rng is None:
            rng = random.Random(f"{self._seed}:{client_tx_id}")
            return rng.uniform(0.8, 1.2), rng.random() < self.fail_rate
        with self._rng_lock:
            return self._rng.uniform(0.8, 1.2), self._rng.random() < self.fail_rate

    def _current(self, signatures: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The rows of these signatures after landing whatever of their pools is due."""
        rows = self._read(signatures)
        now = self._clock()
        due = {r["pool_id"] for r in rows.values() if _due(r, now)}
        if not due:
            return rows
        rows.update((s, r) for s, r in self._land(due).items() if s in rows)
        raced = [s for s, r in rows.items() if _due(r, now)]  # landed by another process meanwhile
        if raced:
            rows.update(self._read(raced))
        return rows

    def _read(self, signatures: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(signatures))
        if not wanted:
            return {}
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(sim_transactions)
                                 .where(sim_transactions.c.signature.in_(wanted))).mappings().all()
        return {r["signature"]: dict(r) for r in found}

    def _land(self, pool_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """Land, in one transaction and in confirm order, every pending transaction of
        these pools whose time has come; returns the landed rows by signature. The pool
        rows are locked in pool id order (FOR UPDATE; SQLite's IMMEDIATE lock), so two
        processes never land the same transaction."""
        now = self._clock()
        with writing(self._engine) as conn:
            locked = self._lock_pools(conn, pool_ids)
            due = conn.execute(
                sa.select(sim_transactions)
                .where(sim_transactions.c.pool_id.in_(list(locked)),
                       sim_transactions.c.status == PENDING,
                       sim_transactions.c.confirm_at <= now)
                .order_by(sim_transactions.c.confirm_at, sim_transactions.c.created_at,
                          sim_transactions.c.signature)
            ).mappings().all() if locked else []
            states = {pid: self._parsed(row) for pid, row in locked.items()}
            landed, moved = {}, set()
            for tx in due:
                outcome, new_state = _land(program(locked[tx["pool_id"]].program), states[tx["pool_id"]], tx)
                landed[tx["signature"]] = {**tx, **outcome}
                if new_state is not None:
                    states[tx["pool_id"]] = new_state
                    moved.add(tx["pool_id"])
            if landed:
                conn.execute(
                    sim_transactions.update()
                    .where(sim_transactions.c.signature == sa.bindparam("b_signature"),
                           sim_transactions.c.status == PENDING)
                    .values({c: sa.bindparam(f"b_{c}") for c in _OUTCOME_COLUMNS}),
                    [{"b_signature": s, **{f"b_{c}": r[c] for c in _OUTCOME_COLUMNS}}
                     for s, r in landed.items()])
            for pool_id in sorted(moved):
                conn.execute(sim_pools.update().where(sim_pools.c.pool_id == pool_id)
                             .values(state=json.dumps(states[pool_id], sort_keys=True),
                                     version=locked[pool_id].version + 1))
        self._remember({pid: (locked[pid].version + 1, states[pid]) for pid in moved})
        return landed

    @staticmethod
    def _lock_pools(conn: Connection, pool_ids: Collection[str]) -> dict[str, Any]:
        """The pools' rows, locked, of the programs this process can run."""
        query = (sa.select(sim_pools).where(sim_pools.c.pool_id.in_(sorted(pool_ids)))
                 .order_by(sim_pools.c.pool_id))
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        return {r.pool_id: r for r in conn.execute(query) if is_known(r.program)}


_OUTCOME_COLUMNS = ("status", "amount_out", "fee", "error_code", "error_message", "slot")


def _due(row: dict[str, Any], now: datetime) -> bool:
    return row["status"] == PENDING and _aware(row["confirm_at"]) <= now


def _land(swap: Program, state: dict[str, Any], tx: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What landing `tx` on `state` does: its final column values, and the new pool
    state when it filled (None when it failed and the pool is unchanged)."""
    slot = _slot(_aware(tx["confirm_at"]))
    if tx["will_fail"]:
        return _failed("TX_FAILED", "The transaction failed on chain.", slot), None
    try:
        out, fee, new_state = swap(state, tx["direction"] == A_TO_B, int(tx["amount_in"]))
    except InsufficientLiquidity as error:
        return _failed(error.code, error.message, slot), None
    min_out = int(tx["min_amount_out"])
    if out < min_out:
        paid, floor = _units(out, tx["decimals_out"]), _units(min_out, tx["decimals_out"])
        return _failed("SLIPPAGE_EXCEEDED",
                       f"The pool paid {paid} at landing, below the minimum {floor}.", slot), None
    return {"status": TxState.CONFIRMED.value, "amount_out": str(out), "fee": str(fee),
            "error_code": None, "error_message": None, "slot": slot}, new_state


def _failed(code: str, message: str, slot: int) -> dict[str, Any]:
    return {"status": TxState.FAILED.value, "amount_out": None, "fee": None,
            "error_code": code, "error_message": message, "slot": slot}


def _tx_status(row: dict[str, Any]) -> TxStatus:
    def units(base: str | None, decimals: int) -> Decimal | None:
        return None if base is None else _units(int(base), decimals)

    return TxStatus(
        state=TxState(row["status"]), signature=row["signature"],
        amount_in=units(row["amount_in"], row["decimals_in"]),
        amount_out=units(row["amount_out"], row["decimals_out"]),
        fee=units(row["fee"], row["decimals_in"]),
        error_code=row["error_code"], error_message=row["error_message"],
    )


def _units(base: int, decimals: int) -> Decimal:
    return Decimal(base).scaleb(-decimals)


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _slot(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=SLOT_MS)
