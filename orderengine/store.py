"""The order store: snapshot + event log, changed together, published after.

Every status change goes through `transition`: in one transaction it checks
the move against the state machine, appends the event with the next `seq`,
and updates the snapshot, guarded by the order's current `last_seq` and work
token (so a worker that lost the order cannot write to it). Only after the
commit is the event published. A crash before the commit leaves nothing; a
crash after it leaves the event in the log, where sockets find it.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from orderengine.amounts import decimal_str
from orderengine.bus import EventBus
from orderengine.clock import iso, utcnow
from orderengine.db import writing
from orderengine.errors import NotCancellable, OrderNotFound, ServiceUnavailable
from orderengine.events import Event
from orderengine import metrics
from orderengine.lifecycle import ACTIVE, TERMINAL, Status, check_transition
from orderengine.models import UTCDateTime, idempotency_keys, order_events, orders, workers
from orderengine.schemas import OrderRequest


_INSERT_ORDERS = sa.insert(orders)
_INSERT_EVENTS = sa.insert(order_events)
#: PostgreSQL: a group of new orders and their `pending` events in ONE statement (one round
#: trip, atomic by itself, so it runs in autocommit: no BEGIN and COMMIT round trips). The
#: events' foreign key is checked at the end of the statement, after both inserts. A group is
#: accepted, and due, at one moment (:at), held by nobody; each event's data is the order as
#: `OrderRequest.to_dict` has it, built here from the same arrays (no JSON text to send).
_INSERT_NEW_ORDERS_PG = sa.text("""
WITH new_orders AS (
  INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage_bps, client_order_id, status,
                      attempts, last_seq, created_at, updated_at, work_token, work_owner, work_due_at, owner)
  SELECT o.id, o.type, o.token_in, o.token_out, o.amount_in, o.slippage_bps, o.client_order_id, 'pending',
         0, 1, CAST(:at AS timestamptz), CAST(:at AS timestamptz), o.work_token, NULL,
         CAST(:at AS timestamptz), o.owner
  FROM unnest(CAST(:id AS varchar[]), CAST(:type AS varchar[]), CAST(:token_in AS varchar[]),
              CAST(:token_out AS varchar[]), CAST(:amount_in AS numeric[]), CAST(:slippage_bps AS integer[]),
              CAST(:client_order_id AS varchar[]), CAST(:work_token AS varchar[]), CAST(:owner AS varchar[]))
       AS o(id, type, token_in, token_out, amount_in, slippage_bps, client_order_id, work_token, owner)
  RETURNING 1
)
INSERT INTO order_events (order_id, seq, status, attempt, data, at)
SELECT e.id, 1, 'pending', 0,
       json_build_object('type', e.type, 'tokenIn', e.token_in, 'tokenOut', e.token_out,
                         'amountIn', e.amount_text, 'slippageBps', e.slippage_bps,
                         'clientOrderId', e.client_order_id),
       CAST(:at AS timestamptz)
FROM unnest(CAST(:id AS varchar[]), CAST(:type AS varchar[]), CAST(:token_in AS varchar[]),
            CAST(:token_out AS varchar[]), CAST(:amount_text AS varchar[]), CAST(:slippage_bps AS integer[]),
            CAST(:client_order_id AS varchar[]))
     AS e(id, type, token_in, token_out, amount_text, slippage_bps, client_order_id)
""")


class StaleWork(Exception):
    """This worker no longer holds the order (another took it over, or it ended)."""


@dataclass(frozen=True)
class Work:
    """Who does the order's next step, and by when it should have started."""
    token: str
    owner: str | None
    due_at: dt.datetime


@dataclass(frozen=True)
class Version:
    """Where an order stands, as a step last saw it: a transition from a known version
    needs no read first (its update is guarded by `last_seq` all the same)."""
    status: str
    last_seq: int
    attempts: int

    @classmethod
    def of(cls, row: Any) -> "Version":
        return cls(row.status, row.last_seq, row.attempts)

    @classmethod
    def after(cls, event: Event) -> "Version":
        return cls(event.status.value, event.seq, event.attempt)


@dataclass(frozen=True)
class Change:
    """One transition for `transition_many`: the order, the version it was decided
    from, where it goes, its event's data, and what else changes with it."""
    order_id: str
    token: str
    current: Version
    target: Status
    data: dict[str, Any]
    attempt: int | None = None
    changes: dict[str, Any] | None = None
    work: Work | None = None


CANCEL_ROUNDS = 5  # a cancel re-reads the order this often while workers move it on
_ACTIVE_VALUES = sorted(s.value for s in ACTIVE)
_NOT_YET_SENT = sorted(s.value for s in (Status.PENDING, Status.ROUTING, Status.RETRYING))
_MAYBE_SENT = sorted(s.value for s in (Status.BUILDING, Status.SUBMITTED))
_UNSUBMITTED = sorted([*_NOT_YET_SENT, Status.BUILDING.value])

_SET_WORK = (sa.update(orders)
             # a terminal order has no token: the token alone says the order is still active
             .where(orders.c.id == sa.bindparam("b_id"), orders.c.work_token == sa.bindparam("b_token"))
             .values(work_token=sa.bindparam("v_token"), work_owner=sa.bindparam("v_owner"),
                     work_due_at=sa.bindparam("v_due")))


@functools.lru_cache(maxsize=64)
def _guarded_update(columns: tuple[str, ...]) -> Any:
    """UPDATE orders SET <columns> WHERE id, last_seq and work_token are as given: one
    statement per set of columns, built once (SQLAlchemy caches its compiled form)."""
    return (sa.update(orders)
            .where(orders.c.id == sa.bindparam("b_id"), orders.c.last_seq == sa.bindparam("b_seq"),
                   orders.c.work_token == sa.bindparam("b_token"))
            .values({c: sa.bindparam(f"v_{c}") for c in columns}))


#: PostgreSQL array types of the columns a transition may set
_PG_ARRAY_TYPES = {
    "status": "varchar", "last_seq": "integer", "attempts": "integer", "updated_at": "timestamptz",
    "venue": "varchar", "tx_hash": "varchar", "amount_out": "numeric", "executed_price": "numeric",
    "error": "text", "work_token": "varchar", "work_owner": "varchar", "work_due_at": "timestamptz",
}


@functools.lru_cache(maxsize=64)
def _pg_guarded_update(columns: tuple[str, ...]) -> Any:
    """One UPDATE for any number of orders, its parameters one array per column
    (unnest): the text never changes with the batch size, so it is parsed once and
    the server plans it once."""
    given = ", ".join(["CAST(:b_id AS varchar[])", "CAST(:b_seq AS integer[])", "CAST(:b_token AS varchar[])",
                       *(f"CAST(:v_{c} AS {_PG_ARRAY_TYPES[c]}[])" for c in columns)])
    names = ", ".join(["b_id", "b_seq", "b_token", *(f"v_{c}" for c in columns)])
    sets = ", ".join(f"{c} = CAST(g.v_{c} AS json)" if c == "error" else f"{c} = g.v_{c}" for c in columns)
    return sa.text(f"UPDATE orders SET {sets} FROM unnest({given}) AS g({names}) "
                   "WHERE orders.id = g.b_id AND orders.last_seq = g.b_seq AND orders.work_token = g.b_token "
                   "RETURNING orders.id")


_PG_INSERT_EVENTS = sa.text(
    "INSERT INTO order_events (order_id, seq, status, attempt, data, at) "
    "SELECT order_id, seq, status, attempt, CAST(data AS json), at FROM unnest("
    "CAST(:order_id AS varchar[]), CAST(:seq AS integer[]), CAST(:status AS varchar[]), "
    "CAST(:attempt AS integer[]), CAST(:data AS text[]), CAST(:at AS timestamptz[])) "
    "AS e(order_id, seq, status, attempt, data, at)")


def _apply_guarded(conn: Any, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> set[str]:
    """Update each order whose last_seq and token are still those given; the ids
    that were. PostgreSQL: one UPDATE ... FROM unnest(...) RETURNING for all of
    them. SQLite (one writer, no network): one UPDATE per order."""
    if conn.dialect.name != "postgresql":
        stmt = _guarded_update(columns)
        return {row["b_id"] for row in rows if conn.execute(stmt, row).rowcount == 1}
    arrays = {key: [row[key] for row in rows] for key in rows[0]}
    if "v_error" in arrays:
        arrays["v_error"] = [None if e is None else json.dumps(e) for e in arrays["v_error"]]
    return set(conn.execute(_pg_guarded_update(columns), arrays).scalars())


def claim_idempotency_keys(conn: Any, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Insert these key records where (caller, key) is free (or held by an expired
    record); the (caller, key) pairs this transaction now holds. A pair another
    transaction holds is left alone: PostgreSQL waits for that transaction and then
    skips the row (ON CONFLICT), so exactly one of any number of racing requests wins."""
    if not rows:
        return set()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(idempotency_keys)
    stmt = stmt.on_conflict_do_update(
        index_elements=["caller", "key"],
        set_={c: stmt.excluded[c] for c in ("fingerprint", "order_id", "status_code", "created_at", "expires_at")},
        where=idempotency_keys.c.expires_at <= stmt.excluded.created_at,
    ).returning(idempotency_keys.c.caller, idempotency_keys.c.key)
    return {(r.caller, r.key) for r in conn.execute(stmt, rows)}


def _insert_events(conn: Any, events: list[Event]) -> None:
    """Append the events: one statement however many (PostgreSQL: unnest; SQLite: executemany)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_INSERT_EVENTS, {
            "order_id": [e.order_id for e in events], "seq": [e.seq for e in events],
            "status": [e.status.value for e in events], "attempt": [e.attempt for e in events],
            "data": [json.dumps(e.data) for e in events], "at": [e.at for e in events]})
        return
    conn.execute(sa.insert(order_events), [
        {"order_id": e.order_id, "seq": e.seq, "status": e.status.value,
         "attempt": e.attempt, "data": e.data, "at": e.at} for e in events])


def new_token() -> str:
    return str(uuid.uuid4())



def count_unsubmitted(engine: Engine, at_most: int | None = None) -> int:
    """How many orders are accepted and not yet submitted (pending, routing, building,
    retrying), counting no further than `at_most` when given: an index range scan on the
    status index, whose cost the bound caps (the queue cap asks this several times a second)."""
    matching = sa.select(sa.literal(1)).where(orders.c.status.in_(_UNSUBMITTED))
    if at_most is not None:
        matching = matching.limit(at_most)
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(matching.subquery())).scalar_one()

class OrderStore:
    def __init__(self, engine: Engine, bus: EventBus) -> None:
        self.engine = engine
        self.writer = writing(engine)
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")  # one-statement writes
        self.bus = bus

    # --- reads ------------------------------------------------------------

    def get(self, order_id: str, owner: str | None = None) -> Any | None:
        """The order's snapshot row; with `owner`, only if it is that caller's (None: anyone's)."""
        query = sa.select(orders).where(orders.c.id == order_id)
        if owner is not None:
            query = query.where(orders.c.owner == owner)
        with self.engine.connect() as conn:
            return conn.execute(query).one_or_none()

    def require(self, order_id: str, owner: str | None = None) -> Any:
        """`get`, or OrderNotFound: another caller's order is not found, with the same
        answer as one that does not exist, so ids tell nothing about other callers."""
        row = self.get(order_id, owner)
        if row is None:
            raise OrderNotFound(f"No order has the id {order_id}.")
        return row

    def owners(self, order_ids: list[str]) -> dict[str, str]:
        """order id -> its owner, for those of `order_ids` that exist (one query)."""
        if not order_ids:
            return {}
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(orders.c.id, orders.c.owner)
                                     .where(orders.c.id.in_(order_ids))).all())

    def events(self, order_id: str, since: int = 0) -> list[Event]:
        query = (sa.select(order_events)
                 .where(order_events.c.order_id == order_id, order_events.c.seq > since)
                 .order_by(order_events.c.seq))
        with self.engine.connect() as conn:
            return [Event.from_row(r) for r in conn.execute(query)]

    # --- writes -----------------------------------------------------------

    def create(self, request: OrderRequest, work: Work, order_id: str | None = None,
               owner: str = "") -> Event:
        """Insert a new order with its `pending` event."""
        order_id = order_id or str(uuid.uuid4())
        now = utcnow()
        with self.writer.begin() as conn:
            conn.execute(sa.insert(orders).values(
                id=order_id, type=request.type, token_in=request.token_in.symbol,
                token_out=request.token_out.symbol, amount_in=request.amount_in,
                slippage_bps=request.slippage_bps, client_order_id=request.client_order_id,
                status=Status.PENDING.value, attempts=0, last_seq=1, created_at=now, updated_at=now,
                work_token=work.token, work_owner=work.owner, work_due_at=work.due_at, owner=owner))
            event = Event(order_id, 1, Status.PENDING, now, 0, request.to_dict())
            conn.execute(sa.insert(order_events).values(
                order_id=order_id, seq=1, status=event.status.value, attempt=0,
                data=event.data, at=now))
        self.bus.publish(event)
        return event

    def create_many(self, new: list[tuple[str, OrderRequest, str]], keys: list[Any] | None = None,
                    key_ttl_s: int = 86_400, owners: list[str] | None = None) -> list[Event | None]:
        """Insert new orders (id, request, work token) with their `pending` events, all or
        nothing: accepted now, due now, held by nobody. On PostgreSQL one statement,
        elsewhere one transaction with one INSERT per table.
        `keys` (one per order, or None) are Idempotency-Keys: then the keys are claimed
        first, in the same transaction, and an order whose key another request holds is
        not stored (None in its place). Publishes nothing: the caller publishes the events
        of the orders it keeps (`bus.publish_many`) once their work is queued.
        `owners` (one per order; None: all '') say whose each order is."""
        now = utcnow()
        owners = owners or [""] * len(new)
        events = [Event(order_id, 1, Status.PENDING, now, 0, request.to_dict()) for order_id, request, _ in new]
        if not keys or all(k is None for k in keys):
            if self.engine.dialect.name == "postgresql":
                with self.autocommit.connect() as conn:  # one statement: atomic by itself
                    self._insert_new_pg(conn, new, events, owners)
            else:
                with self.writer.begin() as conn:
                    self._insert_new(conn, new, events, owners)
            return events
        with self.writer.begin() as conn:
            keep = self._claim_keys(conn, new, keys, key_ttl_s)
            kept = sorted(keep)
            if kept:
                insert = self._insert_new_pg if conn.dialect.name == "postgresql" else self._insert_new
                insert(conn, [new[i] for i in kept], [events[i] for i in kept], [owners[i] for i in kept])
        return [event if i in keep else None for i, event in enumerate(events)]

    @staticmethod
    def _claim_keys(conn: Any, new: list[tuple[str, OrderRequest, str]], keys: list[Any],
                    key_ttl_s: int) -> set[int]:
        """The indexes of the orders to store: those without a key, and the first order
        of each key this transaction now holds."""
        now = utcnow()
        first: dict[tuple[str, str], int] = {}
        rows = []
        for i, key in enumerate(keys):
            if key is None or (key.caller, key.key) in first:
                continue
            first[(key.caller, key.key)] = i
            rows.append({"caller": key.caller, "key": key.key, "fingerprint": key.fingerprint,
                         "order_id": new[i][0], "status_code": None, "created_at": now,
                         "expires_at": now + dt.timedelta(seconds=key_ttl_s)})
        won = claim_idempotency_keys(conn, rows)
        return {i for i, key in enumerate(keys)
                if key is None or ((key.caller, key.key) in won and first[(key.caller, key.key)] == i)}

    @staticmethod
    def _insert_new_pg(conn: Any, new: list[tuple[str, OrderRequest, str]], events: list[Event],
                       owners: list[str]) -> None:
        """The group as arrays, one per column (see `_INSERT_NEW_ORDERS_PG`)."""
        requests = [request for _, request, _ in new]
        conn.execute(_INSERT_NEW_ORDERS_PG, {
            "id": [order_id for order_id, _, _ in new], "type": [r.type for r in requests],
            "token_in": [r.token_in.symbol for r in requests], "token_out": [r.token_out.symbol for r in requests],
            "amount_in": [r.amount_in for r in requests], "amount_text": [e.data["amountIn"] for e in events],
            "slippage_bps": [r.slippage_bps for r in requests],
            "client_order_id": [r.client_order_id for r in requests],
            "work_token": [token for _, _, token in new], "owner": owners, "at": events[0].at})

    @staticmethod
    def _insert_new(conn: Any, new: list[tuple[str, OrderRequest, str]], events: list[Event],
                    owners: list[str]) -> None:
        order_rows, event_rows = [], []
        for (order_id, request, token), event, owner in zip(new, events, owners):
            order_rows.append({
                "id": order_id, "type": request.type, "token_in": request.token_in.symbol,
                "token_out": request.token_out.symbol, "amount_in": request.amount_in,
                "slippage_bps": request.slippage_bps, "client_order_id": request.client_order_id,
                "status": Status.PENDING.value, "attempts": 0, "last_seq": 1, "created_at": event.at,
                "updated_at": event.at, "work_token": token, "work_owner": None,
                "work_due_at": event.at, "owner": owner})
            event_rows.append({"order_id": order_id, "seq": 1, "status": Status.PENDING.value,
                               "attempt": 0, "data": event.data, "at": event.at})
        # a list of rows per statement (an executemany), each statement compiled once and
        # then served from SQLAlchemy's cache
        conn.execute(_INSERT_ORDERS, order_rows)
        conn.execute(_INSERT_EVENTS, event_rows)

    def withdraw(self, order_id: str) -> bool:
        """Remove an order whose scheduling failed, if no worker has touched it; False
        when one has (its step reached the queue after all): then the order lives."""
        untouched = (sa.select(orders.c.id)
                     .where(orders.c.id == order_id, orders.c.status == Status.PENDING.value,
                            orders.c.last_seq == 1, orders.c.work_owner.is_(None)))
        with self.writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                untouched = untouched.with_for_update()  # a worker's claim waits for our answer
            if conn.execute(untouched).first() is None:
                return False
            conn.execute(sa.delete(order_events).where(order_events.c.order_id == order_id))
            conn.execute(sa.delete(idempotency_keys).where(idempotency_keys.c.order_id == order_id))
            conn.execute(sa.delete(orders).where(orders.c.id == order_id))
        return True

    def transition(self, order_id: str, target: Status, *, token: str, data: dict[str, Any],
                   attempt: int | None = None, changes: dict[str, Any] | None = None,
                   work: Work | None = None, current: Version | None = None) -> Event:
        """Move one order to `target` and append its event, atomically (see
        `transition_many`). Without `current` the version is read first; a stale
        token or version raises StaleWork."""
        if current is None:
            with self.engine.connect() as conn:
                current = self._version(conn, order_id, token)
        applied, _ = self.transition_many([Change(order_id, token, current, target, data, attempt,
                                                  changes, work)])
        if not applied:
            raise StaleWork(order_id)
        return applied[0]

    def transition_many(self, batch: list["Change"]) -> tuple[list[Event], list["Change"]]:
        """Apply many transitions in ONE transaction: each order's snapshot is updated
        only where its `last_seq` and work token are still those the change was made
        from, and the events of exactly those orders are appended. Returns (events
        appended, changes left out because their order moved on); then publishes
        the events in one round trip. An illegal move raises before anything is written."""
        if not batch:
            return [], []
        unique = {c.order_id: c for c in reversed(batch)}  # one change per order: the first
        if len(unique) != len(batch):
            batch = [c for c in batch if unique.get(c.order_id) is c]
        now = utcnow()
        events: list[Event] = []
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for change in batch:
            status = check_transition(change.current.status, change.target)
            seq = change.current.last_seq + 1
            values: dict[str, Any] = {"status": status.value, "last_seq": seq, "updated_at": now,
                                      **(change.changes or {})}
            if status in TERMINAL:
                values.update(work_token=None, work_owner=None, work_due_at=None)
            elif change.work is not None:
                values.update(work_token=change.work.token, work_owner=change.work.owner,
                              work_due_at=change.work.due_at)
            attempt = change.attempt if change.attempt is not None else values.get(
                "attempts", change.current.attempts)
            events.append(Event(change.order_id, seq, status, now, attempt, change.data))
            params = {"b_id": change.order_id, "b_seq": change.current.last_seq, "b_token": change.token}
            params.update({f"v_{k}": v for k, v in values.items()})
            by_shape.setdefault(tuple(sorted(values)), []).append(params)
        with self.writer.begin() as conn:
            done: set[str] = set()
            for shape, rows in by_shape.items():
                done |= _apply_guarded(conn, shape, rows)
            stale = [c for c in batch if c.order_id not in done]
            events = [e for e in events if e.order_id in done]
            if events:
                _insert_events(conn, events)
        metrics.events_written(events)
        self.bus.publish_many(events)
        return events, stale

    @staticmethod
    def _version(conn: Any, order_id: str, token: str) -> Version:
        row = conn.execute(
            sa.select(orders.c.status, orders.c.last_seq, orders.c.work_token, orders.c.attempts)
            .where(orders.c.id == order_id)).one_or_none()
        if row is None:
            raise OrderNotFound(f"No order has the id {order_id}.")
        if row.work_token != token:
            raise StaleWork(order_id)
        return Version.of(row)

    def claim(self, order_id: str, token: str, owner: str) -> Any | None:
        """Take the order for a step if `token` is still its current work token.

        Returns the snapshot, or None when the task is stale or the order gone."""
        claim = (sa.update(orders)
                 .where(orders.c.id == order_id, orders.c.work_token == token,
                        orders.c.status.in_(_ACTIVE_VALUES))
                 .values(work_owner=owner))
        with self.writer.begin() as conn:
            if conn.dialect.update_returning:
                return conn.execute(claim.returning(*orders.c)).one_or_none()
            if conn.execute(claim).rowcount != 1:  # SQLite before 3.35
                return None
            return conn.execute(sa.select(orders).where(orders.c.id == order_id)).one()

    def set_work(self, order_id: str, token: str, work: Work) -> bool:
        """Record who does the next step and when, without a status change."""
        with self.writer.begin() as conn:
            result = conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.work_token == token,
                       orders.c.status.in_(_ACTIVE_VALUES))
                .values(work_token=work.token, work_owner=work.owner, work_due_at=work.due_at))
            return result.rowcount == 1

    def set_work_many(self, items: list[tuple[str, str, Work]]) -> int:
        """`set_work` for many (order_id, token, work) in one transaction; how many took."""
        if not items:
            return 0
        with self.writer.begin() as conn:
            return conn.execute(_SET_WORK, [
                {"b_id": oid, "b_token": token, "v_token": w.token, "v_owner": w.owner, "v_due": w.due_at}
                for oid, token, w in items]).rowcount

    def claim_due(self, owner: str, limit: int, now: dt.datetime | None = None,
                  venues: list[str] | None = None, unloaded_since: dt.datetime | None = None,
                  send_grace_s: tuple[float, float] | None = None) -> list[Any]:
        """Take up to `limit` orders whose next step is due and that no worker holds,
        for `owner`, in one statement; their snapshots, earliest due first. On
        PostgreSQL rows another worker is claiming are skipped (SKIP LOCKED), so
        workers never wait for each other and never take the same order.
        With `venues` (those loaded in the claiming worker): an order whose transaction
        may be out (`building`, `submitted`) on another venue is left for a worker that has
        it, unless its transaction was (possibly) sent before `unloaded_since` (then anyone
        may end it). With `send_grace_s` = (ORDER_TTL_MS, VENUE_CALL_TIMEOUT_MS) in seconds,
        a `building` order's latest possible send is taken as the executor takes it
        (`_latest_send`: max(updated_at, created_at + TTL) + call timeout), so a worker
        without the venue does not claim it only to hand it back."""
        now = now or utcnow()
        due = (sa.select(orders.c.id)
               .where(orders.c.work_owner.is_(None), orders.c.work_due_at <= now,
                      orders.c.status.in_(_ACTIVE_VALUES))
               .order_by(orders.c.work_due_at).limit(limit))
        if venues is not None:
            elsewhere = [orders.c.status.in_(_MAYBE_SENT), orders.c.venue.is_not(None),
                         orders.c.venue.not_in(list(venues))]
            if unloaded_since is not None:
                recent = orders.c.updated_at > unloaded_since
                if send_grace_s is not None:
                    ttl, call = (dt.timedelta(seconds=s) for s in send_grace_s)
                    building = orders.c.status == Status.BUILDING.value
                    recent = sa.or_(
                        sa.and_(sa.not_(building), recent),
                        sa.and_(building, sa.or_(orders.c.updated_at > unloaded_since - call,
                                                 orders.c.created_at > unloaded_since - call - ttl)))
                elsewhere.append(recent)
            due = due.where(sa.not_(sa.and_(*elsewhere)))
        with self.writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            claim = (sa.update(orders).where(orders.c.id.in_(due.scalar_subquery()))
                     .values(work_owner=owner).returning(*orders.c))
            return sorted(conn.execute(claim).all(), key=lambda r: r.work_due_at)

    def held(self, pairs: list[tuple[str, str]], owner: str | None = None) -> list[Any]:
        """The snapshots of these (order_id, token) whose token is still current and
        that are still active (and, with `owner`, still held by it: an order whose
        hand-back committed although its answer was lost is let go): what a worker
        re-reads before running a step again."""
        if not pairs:
            return []
        tokens = dict(pairs)
        query = sa.select(orders).where(orders.c.id.in_(list(tokens)), orders.c.status.in_(_ACTIVE_VALUES))
        if owner is not None:
            query = query.where(orders.c.work_owner == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [r for r in rows if r.work_token == tokens[r.id]]

    def held_ids(self, owner: str) -> set[str]:
        """The ids of the active orders the database says `owner` holds: what a worker
        compares with the orders it knows it holds (pump.py, the self-audit). One query
        on the status index: only active orders are walked (a terminal one has no owner)."""
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(orders.c.id).where(
                orders.c.status.in_(_ACTIVE_VALUES), orders.c.work_owner == owner)).scalars())

    def adopt(self, owner: str, order_ids: list[str] | set[str]) -> list[Any]:
        """Take up again orders `owner` holds in the database but had lost track of (a
        claim whose answer was lost, a forgotten order), each under a new work token and
        due now, in one statement; the snapshots of those still active and still held by
        `owner`. The new token makes any step of the old one that might still be running
        somewhere harmless: its writes find the order moved on."""
        ids = sorted(order_ids)
        if not ids:
            return []
        tokens = {oid: new_token() for oid in ids}
        adopt = (sa.update(orders)
                 .where(orders.c.id.in_(ids), orders.c.work_owner == owner,
                        orders.c.status.in_(_ACTIVE_VALUES))
                 .values(work_token=sa.case(tokens, value=orders.c.id), work_due_at=utcnow())
                 .returning(*orders.c))
        with self.writer.begin() as conn:
            return sorted(conn.execute(adopt).all(), key=lambda r: r.id)

    def first_events(self, order_ids: list[str]) -> dict[str, Event]:
        """The `pending` event (seq 1) of each of these orders that is stored, by id: which
        orders a commit whose answer was lost did store."""
        if not order_ids:
            return {}
        query = sa.select(order_events).where(order_events.c.order_id.in_(order_ids), order_events.c.seq == 1)
        with self.engine.connect() as conn:
            return {r.order_id: Event.from_row(r) for r in conn.execute(query)}

    def last_events(self, order_ids: list[str], status: Status) -> dict[str, Event]:
        """Each order's latest event with `status`, in one query."""
        if not order_ids:
            return {}
        query = (sa.select(order_events)
                 .where(order_events.c.order_id.in_(order_ids), order_events.c.status == status.value)
                 .order_by(order_events.c.order_id, order_events.c.seq))
        with self.engine.connect() as conn:
            return {r.order_id: Event.from_row(r) for r in conn.execute(query)}

    def cancel(self, order_id: str, reason: str, owner: str | None = None) -> Any:
        """Cancel an order not yet handed to a venue (pending, routing, retrying) with a
        guarded transition, like any other: a worker about to move the order on loses
        the race cleanly. An order already cancelled is returned as it is; one in
        `building` or later raises NotCancellable; another `owner`'s, OrderNotFound.
        Returns the snapshot after."""
        for _ in range(CANCEL_ROUNDS):
            row = self.require(order_id, owner)
            if row.status == Status.CANCELLED.value:
                return row
            if row.status not in _NOT_YET_SENT:
                raise NotCancellable(f"The order is {row.status}: its swap may already be on its way "
                                     "to the venue, so it can no longer be cancelled.")
            applied, _ = self.transition_many([Change(order_id, row.work_token, Version.of(row),
                                                      Status.CANCELLED, {"reason": reason})])
            if applied:
                metrics.order_moved(row.created_at, applied[0])
                return self.require(order_id, owner)
        raise ServiceUnavailable("The order kept changing while it was being cancelled; try again.")

    def page(self, *, before: tuple[dt.datetime, str] | None, limit: int, status: str | None = None,
             client_order_id: str | None = None, owner: str | None = None) -> list[Any]:
        """Orders newest first (created_at, then id, descending), strictly after the
        cursor `before` when given: keyset pagination, so a page never repeats or
        skips an order while new ones arrive at the head. With `owner`, that caller's
        only (index on owner, created_at, id)."""
        query = sa.select(orders)
        if owner is not None:
            query = query.where(orders.c.owner == owner)
        if status is not None:
            query = query.where(orders.c.status == status)
        if client_order_id is not None:
            query = query.where(orders.c.client_order_id == client_order_id)
        if before is not None:
            query = query.where(sa.tuple_(orders.c.created_at, orders.c.id) < sa.tuple_(
                sa.literal(before[0], UTCDateTime()), sa.literal(before[1])))
        query = query.order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    # --- idempotency keys --------------------------------------------------------

    def idempotent_answer(self, caller: str, key: str) -> Any | None:
        """The live (unexpired) record of `key` for `caller`, or None."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(idempotency_keys).where(
                idempotency_keys.c.caller == caller, idempotency_keys.c.key == key,
                idempotency_keys.c.expires_at > utcnow())).one_or_none()

    def finish_idempotency_keys(self, keys: list[tuple[str, str]]) -> None:
        """Mark these (caller, key) answered: their orders are live (201)."""
        with self.writer.begin() as conn:
            conn.execute(sa.update(idempotency_keys)
                         .where(idempotency_keys.c.caller == sa.bindparam("b_caller"),
                                idempotency_keys.c.key == sa.bindparam("b_key"))
                         .values(status_code=201),
                         [{"b_caller": caller, "b_key": key} for caller, key in keys])

    def purge_idempotency_keys(self) -> int:
        """Forget keys past their IDEMPOTENCY_TTL_S; how many."""
        with self.writer.begin() as conn:
            return conn.execute(sa.delete(idempotency_keys)
                                .where(idempotency_keys.c.expires_at <= utcnow())).rowcount

    def overdue(self, accepted_before: dt.datetime, limit: int) -> list[Any]:
        """Snapshots of orders accepted before `accepted_before` that no venue has been
        handed yet (pending, routing, retrying): what ORDER_TTL_MS expires."""
        query = (sa.select(orders)
                 .where(orders.c.status.in_(_NOT_YET_SENT), orders.c.created_at < accepted_before)
                 .limit(limit))
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def count_unsubmitted(self) -> int:
        """Accepted orders not yet submitted to a venue (pending, routing, building, retrying):
        one count on the status index."""
        return count_unsubmitted(self.engine)

    def release(self, owner: str) -> int:
        """Hand every order `owner` holds back to whoever claims next (graceful stop)."""
        with self.writer.begin() as conn:
            return conn.execute(sa.update(orders).where(orders.c.work_owner == owner)
                                .values(work_owner=None)).rowcount

    def orders_needing_work(self, dead_before: dt.datetime, limit: int = 1000) -> list[tuple[str, str]]:
        """(order_id, token) of active orders held by a worker whose heartbeat
        stopped before `dead_before` (or that has no heartbeat row at all)."""
        owner_alive = (sa.select(workers.c.id)
                       .where(workers.c.id == orders.c.work_owner, workers.c.last_seen >= dead_before)
                       .exists())
        query = (sa.select(orders.c.id, orders.c.work_token)
                 .where(orders.c.work_owner.is_not(None), orders.c.status.in_(_ACTIVE_VALUES), ~owner_alive)
                 .limit(limit))
        with self.engine.connect() as conn:
            return [(r.id, r.work_token) for r in conn.execute(query)]


def snapshot(row: Any) -> dict[str, Any]:
    """The order as GET /api/orders/<id> shows it."""
    return {
        "orderId": row.id, "type": row.type, "tokenIn": row.token_in, "tokenOut": row.token_out,
        "amountIn": decimal_str(row.amount_in), "slippageBps": row.slippage_bps,
        "clientOrderId": row.client_order_id, "status": row.status, "attempts": row.attempts,
        "venue": row.venue, "txHash": row.tx_hash, "amountOut": decimal_str(row.amount_out),
        "executedPrice": decimal_str(row.executed_price), "error": row.error,
        "createdAt": iso(row.created_at), "updatedAt": iso(row.updated_at),
    }
