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
import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orderengine.amounts import decimal_str
from orderengine.bus import EventBus
from orderengine.clock import iso, utcnow
from orderengine.db import writing
from orderengine.errors import OrderNotFound
from orderengine.events import Event
from orderengine.lifecycle import ACTIVE, TERMINAL, Status, check_transition
from orderengine.models import order_events, orders, workers
from orderengine.schemas import OrderRequest


_INSERT_ORDERS = sa.insert(orders)
_INSERT_EVENTS = sa.insert(order_events)
#: PostgreSQL: a group of new orders and their `pending` events in ONE statement (one round
#: trip, atomic by itself, so it runs in autocommit: no BEGIN and COMMIT round trips). The
#: events' foreign key is checked at the end of the statement, after both inserts.
_INSERT_NEW_ORDERS_PG = sa.text("""
WITH new_orders AS (
  INSERT INTO orders (id, type, token_in, token_out, amount_in, slippage_bps, client_order_id, status,
                      attempts, last_seq, created_at, updated_at, work_token, work_owner, work_due_at)
  SELECT o.id, o.type, o.token_in, o.token_out, o.amount_in, o.slippage_bps, o.client_order_id, 'pending',
         0, 1, o.at, o.at, o.work_token, o.work_owner, o.work_due_at
  FROM unnest(CAST(:id AS varchar[]), CAST(:type AS varchar[]), CAST(:token_in AS varchar[]),
              CAST(:token_out AS varchar[]), CAST(:amount_in AS numeric[]), CAST(:slippage_bps AS integer[]),
              CAST(:client_order_id AS varchar[]), CAST(:at AS timestamptz[]), CAST(:work_token AS varchar[]),
              CAST(:work_owner AS varchar[]), CAST(:work_due_at AS timestamptz[]))
       AS o(id, type, token_in, token_out, amount_in, slippage_bps, client_order_id, at, work_token,
            work_owner, work_due_at)
  RETURNING 1
)
INSERT INTO order_events (order_id, seq, status, attempt, data, at)
SELECT e.order_id, 1, 'pending', 0, e.data, e.at
FROM unnest(CAST(:id AS varchar[]), CAST(:data AS json[]), CAST(:at AS timestamptz[]))
     AS e(order_id, data, at)
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


def new_token() -> str:
    return str(uuid.uuid4())


class OrderStore:
    def __init__(self, engine: Engine, bus: EventBus) -> None:
        self.engine = engine
        self.writer = writing(engine)
        self.bus = bus

    # --- reads ------------------------------------------------------------

    def get(self, order_id: str) -> Any | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(orders).where(orders.c.id == order_id)).one_or_none()

    def require(self, order_id: str) -> Any:
        row = self.get(order_id)
        if row is None:
            raise OrderNotFound(f"No order has the id {order_id}.")
        return row

    def events(self, order_id: str, since: int = 0) -> list[Event]:
        query = (sa.select(order_events)
                 .where(order_events.c.order_id == order_id, order_events.c.seq > since)
                 .order_by(order_events.c.seq))
        with self.engine.connect() as conn:
            return [Event.from_row(r) for r in conn.execute(query)]

    def last_event(self, order_id: str, status: Status) -> Event | None:
        query = (sa.select(order_events)
                 .where(order_events.c.order_id == order_id, order_events.c.status == status.value)
                 .order_by(order_events.c.seq.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return Event.from_row(row) if row else None

    # --- writes -----------------------------------------------------------

    def create(self, request: OrderRequest, work: Work, order_id: str | None = None) -> Event:
        """Insert a new order with its `pending` event."""
        order_id = order_id or str(uuid.uuid4())
        now = utcnow()
        with self.writer.begin() as conn:
            conn.execute(sa.insert(orders).values(
                id=order_id, type=request.type, token_in=request.token_in.symbol,
                token_out=request.token_out.symbol, amount_in=request.amount_in,
                slippage_bps=request.slippage_bps, client_order_id=request.client_order_id,
                status=Status.PENDING.value, attempts=0, last_seq=1, created_at=now, updated_at=now,
                work_token=work.token, work_owner=work.owner, work_due_at=work.due_at))
            event = Event(order_id, 1, Status.PENDING, now, 0, request.to_dict())
            conn.execute(sa.insert(order_events).values(
                order_id=order_id, seq=1, status=event.status.value, attempt=0,
                data=event.data, at=now))
        self.bus.publish(event)
        return event

    def create_many(self, new: list[tuple[str, OrderRequest, Work]]) -> list[Event]:
        """Insert new orders (id, request, work) with their `pending` events, all or nothing:
        on PostgreSQL one statement, elsewhere one transaction with one INSERT per table.
        Publishes nothing: the caller publishes the events of the orders it keeps
        (`bus.publish_many`) once their work is queued."""
        events = []
        for order_id, request, work in new:
            events.append(Event(order_id, 1, Status.PENDING, utcnow(), 0, request.to_dict()))
        if self.engine.dialect.name == "postgresql":
            self._insert_new_pg(new, events)
        else:
            self._insert_new(new, events)
        return events

    def _insert_new_pg(self, new: list[tuple[str, OrderRequest, Work]], events: list[Event]) -> None:
        """The group as arrays, one per column (see `_INSERT_NEW_ORDERS_PG`)."""
        columns: dict[str, list[Any]] = {k: [] for k in (
            "id", "type", "token_in", "token_out", "amount_in", "slippage_bps", "client_order_id", "at",
            "work_token", "work_owner", "work_due_at", "data")}
        for (order_id, request, work), event in zip(new, events):
            for key, value in (("id", order_id), ("type", request.type),
                               ("token_in", request.token_in.symbol),
                               ("token_out", request.token_out.symbol), ("amount_in", request.amount_in),
                               ("slippage_bps", request.slippage_bps),
                               ("client_order_id", request.client_order_id), ("at", event.at),
                               ("work_token", work.token), ("work_owner", work.owner),
                               ("work_due_at", work.due_at), ("data", json.dumps(event.data))):
                columns[key].append(value)
        with self.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(_INSERT_NEW_ORDERS_PG, columns)

    def _insert_new(self, new: list[tuple[str, OrderRequest, Work]], events: list[Event]) -> None:
        order_rows, event_rows = [], []
        for (order_id, request, work), event in zip(new, events):
            order_rows.append({
                "id": order_id, "type": request.type, "token_in": request.token_in.symbol,
                "token_out": request.token_out.symbol, "amount_in": request.amount_in,
                "slippage_bps": request.slippage_bps, "client_order_id": request.client_order_id,
                "status": Status.PENDING.value, "attempts": 0, "last_seq": 1, "created_at": event.at,
                "updated_at": event.at, "work_token": work.token, "work_owner": work.owner,
                "work_due_at": work.due_at})
            event_rows.append({"order_id": order_id, "seq": 1, "status": Status.PENDING.value,
                               "attempt": 0, "data": event.data, "at": event.at})
        with self.writer.begin() as conn:
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
            conn.execute(sa.delete(orders).where(orders.c.id == order_id))
        return True

    def transition(self, order_id: str, target: Status, *, token: str, data: dict[str, Any],
                   attempt: int | None = None, changes: dict[str, Any] | None = None,
                   work: Work | None = None, current: Version | None = None) -> Event:
        """Move the order to `target` and append its event, atomically. `current` is
        the version the caller knows (saves a read); a stale one raises StaleWork."""
        now = utcnow()
        with self.writer.begin() as conn:
            row = current or self._version(conn, order_id, token)
            status = check_transition(row.status, target)
            seq = row.last_seq + 1
            values: dict[str, Any] = {"status": status.value, "last_seq": seq, "updated_at": now,
                                      **(changes or {})}
            if status in TERMINAL:
                values.update(work_token=None, work_owner=None, work_due_at=None)
            elif work is not None:
                values.update(work_token=work.token, work_owner=work.owner, work_due_at=work.due_at)
            result = conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id, orders.c.last_seq == row.last_seq,
                       orders.c.work_token == token)
                .values(**values))
            if result.rowcount != 1:
                raise StaleWork(order_id)
            event = Event(order_id, seq, status, now,
                          attempt if attempt is not None else values.get("attempts", row.attempts),
                          data)
            conn.execute(sa.insert(order_events).values(
                order_id=order_id, seq=seq, status=status.value, attempt=event.attempt,
                data=data, at=now))
        self.bus.publish(event)
        return event

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
                        orders.c.status.in_([s.value for s in ACTIVE]))
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
                       orders.c.status.in_([s.value for s in ACTIVE]))
                .values(work_token=work.token, work_owner=work.owner, work_due_at=work.due_at))
            return result.rowcount == 1

    def orders_needing_work(self, dead_before: dt.datetime, lost_before: dt.datetime,
                            limit: int = 500) -> list[tuple[str, str | None]]:
        """Active orders whose next step nobody is doing: held by a worker whose
        heartbeat stopped before `dead_before`, or due before `lost_before` and
        still not done (its queued step was lost, e.g. with a Redis restart)."""
        owner_alive = (sa.select(workers.c.id)
                       .where(workers.c.id == orders.c.work_owner, workers.c.last_seen >= dead_before)
                       .exists())
        owned_by_dead = sa.and_(orders.c.work_owner.is_not(None), ~owner_alive)
        query = (sa.select(orders.c.id, orders.c.work_token)
                 .where(orders.c.status.in_([s.value for s in ACTIVE]),
                        sa.or_(owned_by_dead, orders.c.work_due_at < lost_before))
                 .order_by(orders.c.work_due_at).limit(limit))
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
