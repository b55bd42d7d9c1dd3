"""The simulated Solana chain every process shares.

Its ledger lives in a database, so API servers and workers on any host see one
chain: pools with their program state, and the transactions sent to them. Time
here is lazy: a transaction lands when somebody next looks at its pool after
its confirm time, and the due transactions of a pool land together, in confirm
order, each against the state the one before left - as a leader would execute
them. The engine never reads these tables; it talks to venues, which talk to this.
"""
from __future__ import annotations

import hashlib
import json
import random
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

from orderengine.db import create_db_engine, normalize_url, writing
from orderengine.venue import InsufficientLiquidity, TxState, TxStatus
from venues import cpmm, dlmm
from venues.market import MarketParams, play_tick

Clock = Callable[[], datetime]
Program = Callable[[dict[str, Any], bool, int], tuple[int, int, dict[str, Any]]]

A_TO_B, B_TO_A = "a_to_b", "b_to_a"
SLOT_MS = 400  # Solana's slot time: a transaction's slot follows from when it landed
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BASE_UNITS = sa.String(40)  # u64 amounts as decimal text: exact on SQLite and PostgreSQL

metadata = sa.MetaData()

sim_pools = sa.Table(
    "sim_pools", metadata,
    sa.Column("pool_id", sa.String(64), primary_key=True),
    sa.Column("program", sa.String(32), nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # the program's state, JSON
    sa.Column("version", sa.Integer, nullable=False),
)

sim_transactions = sa.Table(
    "sim_transactions", metadata,
    sa.Column("signature", sa.String(100), primary_key=True),
    sa.Column("client_tx_id", sa.String(255), nullable=False, unique=True),
    sa.Column("pool_id", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("amount_in", BASE_UNITS, nullable=False),
    sa.Column("min_amount_out", BASE_UNITS, nullable=False),
    sa.Column("decimals_in", sa.Integer, nullable=False),
    sa.Column("decimals_out", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("will_fail", sa.Boolean, nullable=False),
    sa.Column("confirm_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("amount_out", BASE_UNITS),
    sa.Column("fee", BASE_UNITS),
    sa.Column("error_code", sa.String(40)),
    sa.Column("error_message", sa.Text),
    sa.Column("slot", sa.BigInteger),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_sim_transactions_due", "pool_id", "status", "confirm_at"),
)

sim_market = sa.Table(
    "sim_market", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tick", sa.BigInteger, nullable=False),   # the last tick played
    sa.Column("anchors", sa.Text, nullable=False),      # pair -> its first price, JSON
)


class UnknownPool(LookupError):
    """No pool with this id (or not run by this program) is on the chain."""


# --- programs -------------------------------------------------------------------

_PROGRAMS: dict[str, Program] = {"cpmm": cpmm.swap, "dlmm": dlmm.swap}
_MIDS: dict[str, Callable[[dict[str, Any]], Decimal]] = {"cpmm": cpmm.mid_price, "dlmm": dlmm.mid_price}


def register_program(name: str, swap: Program,
                     mid_price: Callable[[dict[str, Any]], Decimal] | None = None) -> None:
    """Make a pool program known to the chain; it must be registered in every
    process that may land its transactions. With `mid_price` (B base units per A
    base unit) its pools take part in the simulated market's moves."""
    _PROGRAMS[name] = swap
    if mid_price is not None:
        _MIDS[name] = mid_price


def program(name: str) -> Program:
    try:
        return _PROGRAMS[name]
    except KeyError:
        raise UnknownPool(f"no program {name!r} is deployed on this chain") from None


# --- addresses --------------------------------------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    """Bitcoin/Solana base58: leading zero bytes become '1'."""
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_B58_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def signature_for(client_tx_id: str) -> str:
    """A Solana-looking signature (64 bytes, base58) that the id alone determines,
    so a re-send under the same id cannot mint a second transaction."""
    return b58encode(hashlib.sha512(client_tx_id.encode()).digest())


def address_for(seed: str) -> str:
    """A Solana-looking account address (32 bytes, base58) derived from `seed`."""
    return b58encode(hashlib.sha256(seed.encode()).digest())


# --- engines ----------------------------------------------------------------------

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per database per process, shared by every venue and chain object."""
    url = normalize_url(url)
    with _engines_lock:
        if url not in _engines:
            _engines[url] = _build_engine(url)
        return _engines[url]


def _build_engine(url: str) -> Engine:
    # the same configuration as the engine's own database: WAL, busy timeout, IMMEDIATE writers
    return create_db_engine(url, pool_size=15)


def _create_tables(engine: Engine) -> None:
    """Idempotent, and safe when several processes start at once: the loser of a
    CREATE race finds the tables there on its next look."""
    for attempt in range(3):
        try:
            with _writing(engine) as conn:
                metadata.create_all(conn)
            return
        except (exc.ProgrammingError, exc.IntegrityError, exc.OperationalError):
            if attempt == 2:
                raise


@contextmanager
def _writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction; on SQLite it takes the write lock up front (BEGIN
    IMMEDIATE), so concurrent writers wait their turn instead of failing."""
    with writing(engine).connect() as conn:
        with conn.begin():
            yield conn


# --- the chain --------------------------------------------------------------------

def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SimChain:
    """The ledger: pools, and the transactions sent to them."""

    def __init__(self, url: str, *, exec_latency_ms: int = 2500, fail_rate: float = 0.0,
                 seed: int = 7, clock: Clock = utc_now, rng: random.Random | None = None,
                 market: MarketParams | None = None) -> None:
        self.url = normalize_url(url)
        self.market = market
        self._market_tick_seen = -1
        self._states: dict[str, tuple[int, dict[str, Any]]] = {}  # pool -> (version, parsed state)
        self.exec_latency_ms = exec_latency_ms
        self.fail_rate = fail_rate
        self._seed = seed
        self._clock = clock
        self._rng = rng
        self._rng_lock = threading.Lock()
        self._engine = engine_for(self.url)
        _create_tables(self._engine)

    # pools

    def ensure_pool(self, pool_id: str, program_name: str, initial_state: dict[str, Any]) -> None:
        """Create the pool if it is not on the chain yet; an existing pool is left as it
        is. The state must carry `decimals_a` and `decimals_b` besides the program's own."""
        program(program_name)
        row = {"pool_id": pool_id, "program": program_name,
               "state": json.dumps(initial_state, sort_keys=True), "version": 1}
        try:
            with _writing(self._engine) as conn:
                if self._pool_row(conn, pool_id) is None:
                    conn.execute(sim_pools.insert().values(**row))
        except exc.IntegrityError:
            pass  # another process seeded it in the same instant

    def pool_state(self, pool_id: str) -> dict[str, Any]:
        """The pool's state after every transaction due by now has landed (callers must
        not change it: it is shared with the next caller until the pool changes)."""
        self.play_market()
        due = (sa.select(sim_transactions.c.signature)
               .where(sim_transactions.c.pool_id == pool_id,
                      sim_transactions.c.status == TxState.PENDING.value,
                      sim_transactions.c.confirm_at <= self._clock())
               .exists())
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(sim_pools.c.version, due.label("due"))
                               .where(sim_pools.c.pool_id == pool_id)).one_or_none()
        if row is None:
            raise UnknownPool(pool_id)
        if row.due:
            self._advance(pool_id)
        cached = self._states.get(pool_id)
        if cached is not None and cached[0] == row.version and not row.due:
            return cached[1]
        with self._engine.connect() as conn:
            pool = self._pool_row(conn, pool_id)
        state = json.loads(pool.state)
        self._states[pool_id] = (pool.version, state)
        return state

    def play_market(self) -> None:
        """Play the market's ticks up to now (once, whichever process gets there first)."""
        if self.market is None:
            return
        tick = int(self._clock().timestamp() * 1000) // self.market.tick_ms
        if tick <= self._market_tick_seen:
            return
        with self._engine.connect() as conn:
            played = conn.execute(sa.select(sim_market.c.tick).where(sim_market.c.id == 1)).scalar()
        if played is None:
            try:
                with _writing(self._engine) as conn:
                    conn.execute(sim_market.insert().values(id=1, tick=tick, anchors="{}"))
            except exc.IntegrityError:
                pass  # another process started the market in the same instant
            self._market_tick_seen = tick
            return
        if played < tick:
            self._play_ticks(tick)
        self._market_tick_seen = tick

    def _play_ticks(self, tick: int) -> None:
        params = self.market
        with _writing(self._engine) as conn:
            lock = sa.select(sim_market).where(sim_market.c.id == 1)
            pools_query = sa.select(sim_pools).order_by(sim_pools.c.pool_id)
            if conn.dialect.name != "sqlite":
                lock, pools_query = lock.with_for_update(), pools_query.with_for_update()
            market = conn.execute(lock).one()
            if market.tick >= tick:
                return
            rows = [r for r in conn.execute(pools_query) if r.program in _MIDS]
            pools = {r.pool_id: (json.loads(r.state), _PROGRAMS[r.program], _MIDS[r.program]) for r in rows}
            anchors = json.loads(market.anchors)
            for t in range(max(market.tick + 1, tick - params.max_catch_up + 1), tick + 1):
                for pool_id, state in play_tick(pools, anchors, t, self._seed, params).items():
                    pools[pool_id] = (state, *pools[pool_id][1:])
            for r in rows:
                conn.execute(sim_pools.update().where(sim_pools.c.pool_id == r.pool_id)
                             .values(state=json.dumps(pools[r.pool_id][0], sort_keys=True),
                                     version=r.version + 1))
            conn.execute(sim_market.update().where(sim_market.c.id == 1)
                         .values(tick=tick, anchors=json.dumps(anchors, sort_keys=True)))

    # transactions

    def send(self, client_tx_id: str, pool_id: str, program_name: str, a_to_b: bool,
             amount_in_base: int, min_out_base: int) -> str:
        """Submit a swap; idempotent on `client_tx_id` (a second send returns the first
        one's signature and changes nothing). Its latency and fate are drawn now."""
        if amount_in_base <= 0 or min_out_base < 0:
            raise ValueError("amount_in must be positive and min_out not negative")
        latency_factor, will_fail = self._draw(client_tx_id)
        now = self._clock()
        try:
            with _writing(self._engine) as conn:
                existing = self._tx_row(conn, sim_transactions.c.client_tx_id == client_tx_id)
                if existing is not None:
                    return existing.signature
                state = self._pool_state_for_send(conn, pool_id, program_name)
                signature = signature_for(client_tx_id)
                conn.execute(sim_transactions.insert().values(
                    signature=signature, client_tx_id=client_tx_id, pool_id=pool_id,
                    direction=A_TO_B if a_to_b else B_TO_A,
                    amount_in=str(amount_in_base), min_amount_out=str(min_out_base),
                    decimals_in=state["decimals_a" if a_to_b else "decimals_b"],
                    decimals_out=state["decimals_b" if a_to_b else "decimals_a"],
                    status=TxState.PENDING.value, will_fail=will_fail,
                    confirm_at=now + timedelta(milliseconds=self.exec_latency_ms * latency_factor),
                    created_at=now,
                ))
                return signature
        except exc.IntegrityError:
            # sent under the same id by another process at the same instant: theirs stands
            with self._engine.connect() as conn:
                return self._tx_row(conn, sim_transactions.c.client_tx_id == client_tx_id).signature

    def status(self, signature: str) -> TxStatus:
        return self._answer(sim_transactions.c.signature == signature, signature)

    def lookup(self, client_tx_id: str) -> TxStatus:
        """UNKNOWN when nothing was ever sent under this id."""
        return self._answer(sim_transactions.c.client_tx_id == client_tx_id, None)

    # internals

    def _answer(self, where: Any, signature: str | None) -> TxStatus:
        with self._engine.connect() as conn:
            row = self._tx_row(conn, where)
        if row is None:
            return TxStatus(TxState.UNKNOWN, signature=signature)
        if row.status == TxState.PENDING.value and _aware(row.confirm_at) <= self._clock():
            self.play_market()
            self._advance(row.pool_id)
            with self._engine.connect() as conn:
                row = self._tx_row(conn, where)
        return _tx_status(row)

    def _draw(self, client_tx_id: str) -> tuple[float, bool]:
        """(latency factor, will fail). Without an injected rng the draw is a function
        of the seed and the id: independent across transactions, equal across processes."""
        if self._rng is None:
            rng = random.Random(f"{self._seed}:{client_tx_id}")
            return rng.uniform(0.8, 1.2), rng.random() < self.fail_rate
        with self._rng_lock:
            return self._rng.uniform(0.8, 1.2), self._rng.random() < self.fail_rate

    def _advance(self, pool_id: str) -> None:
        """Land, in one transaction and in confirm order, every pending transaction of
        the pool whose time has come. The pool row is locked (FOR UPDATE; SQLite's
        IMMEDIATE lock), so two processes never land the same transaction."""
        now = self._clock()
        with _writing(self._engine) as conn:
            query = sa.select(sim_pools).where(sim_pools.c.pool_id == pool_id)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            pool = conn.execute(query).one()
            swap = program(pool.program)
            state = json.loads(pool.state)
            due = conn.execute(
                sa.select(sim_transactions)
                .where(sim_transactions.c.pool_id == pool_id,
                       sim_transactions.c.status == TxState.PENDING.value,
                       sim_transactions.c.confirm_at <= now)
                .order_by(sim_transactions.c.confirm_at, sim_transactions.c.created_at,
                          sim_transactions.c.signature)
            ).all()
            moved = False
            for tx in due:
                outcome, new_state = _land(swap, state, tx)
                conn.execute(
                    sim_transactions.update()
                    .where(sim_transactions.c.signature == tx.signature,
                           sim_transactions.c.status == TxState.PENDING.value)
                    .values(**outcome, slot=_slot(_aware(tx.confirm_at))))
                if new_state is not None:
                    state, moved = new_state, True
            if moved:
                conn.execute(sim_pools.update().where(sim_pools.c.pool_id == pool_id)
                             .values(state=json.dumps(state, sort_keys=True),
                                     version=pool.version + 1))

    def _pool_state_for_send(self, conn: Connection, pool_id: str, program_name: str) -> dict[str, Any]:
        pool = self._pool_row(conn, pool_id)
        if pool is None or pool.program != program_name:
            raise UnknownPool(f"no {program_name} pool {pool_id} on this chain")
        return json.loads(pool.state)

    @staticmethod
    def _pool_row(conn: Connection, pool_id: str) -> Any:
        return conn.execute(sa.select(sim_pools).where(sim_pools.c.pool_id == pool_id)).first()

    @staticmethod
    def _tx_row(conn: Connection, where: Any) -> Any:
        return conn.execute(sa.select(sim_transactions).where(where)).first()


def _land(swap: Program, state: dict[str, Any], tx: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What landing `tx` on `state` does: the row's final values, and the new pool
    state when it filled (None when it failed and the pool is unchanged)."""
    if tx.will_fail:
        return _failed("TX_FAILED", "The transaction failed on chain."), None
    try:
        out, fee, new_state = swap(state, tx.direction == A_TO_B, int(tx.amount_in))
    except InsufficientLiquidity as error:
        return _failed(error.code, error.message), None
    min_out = int(tx.min_amount_out)
    if out < min_out:
        paid, floor = _units(out, tx.decimals_out), _units(min_out, tx.decimals_out)
        return _failed("SLIPPAGE_EXCEEDED",
                       f"The pool paid {paid} at landing, below the minimum {floor}."), None
    return {"status": TxState.CONFIRMED.value, "amount_out": str(out), "fee": str(fee)}, new_state


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"status": TxState.FAILED.value, "error_code": code, "error_message": message}


def _tx_status(row: Any) -> TxStatus:
    def units(base: str | None, decimals: int) -> Decimal | None:
        return None if base is None else _units(int(base), decimals)

    return TxStatus(
        state=TxState(row.status), signature=row.signature,
        amount_in=units(row.amount_in, row.decimals_in),
        amount_out=units(row.amount_out, row.decimals_out),
        fee=units(row.fee, row.decimals_in),
        error_code=row.error_code, error_message=row.error_message,
    )


def _units(base: int, decimals: int) -> Decimal:
    return Decimal(base).scaleb(-decimals)


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _slot(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=SLOT_MS)


# --- one chain per settings per process ------------------------------------------

_chains: dict[tuple[str, int, float, int], SimChain] = {}
_chains_lock = threading.Lock()


def get_chain(url: str, exec_latency_ms: int = 2500, fail_rate: float = 0.0, seed: int = 7) -> SimChain:
    """The process's chain for these settings; all of them share one engine per URL."""
    key = (normalize_url(url), exec_latency_ms, fail_rate, seed)
    with _chains_lock:
        if key not in _chains:
            _chains[key] = SimChain(key[0], exec_latency_ms=exec_latency_ms,
                                    fail_rate=fail_rate, seed=seed, market=MarketParams())
        return _chains[key]
