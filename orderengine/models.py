"""The engine's tables: the order snapshot and its append-only event log.

`orders` is the current state of each order (what GET /api/orders/<id> shows,
plus the bookkeeping of who works on it next); `order_events` is the history,
one row per status change, numbered 1, 2, 3 ... per order. Both change in one
transaction (see `store.py`).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Amount(sa.types.TypeDecorator):
    """An exact Decimal: NUMERIC on PostgreSQL, text on SQLite (whose NUMERIC is a float)."""
    impl = sa.String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(40, 18))
        return dialect.type_descriptor(sa.String(80))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return value if dialect.name == "postgresql" else format(Decimal(value), "f")

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(value).normalize()


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(16))
    token_in: Mapped[str] = mapped_column(sa.String(16))
    token_out: Mapped[str] = mapped_column(sa.String(16))
    amount_in: Mapped[Decimal] = mapped_column(Amount())
    slippage_bps: Mapped[int] = mapped_column(sa.Integer)
    client_order_id: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    venue: Mapped[str | None] = mapped_column(sa.String(64))
    tx_hash: Mapped[str | None] = mapped_column(sa.String(128))
    amount_out: Mapped[Decimal | None] = mapped_column(Amount())
    executed_price: Mapped[Decimal | None] = mapped_column(Amount())
    error: Mapped[dict | None] = mapped_column(sa.JSON)
    last_seq: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Who does this order's next step, and when (see sweeper.py). Cleared when terminal.
    work_token: Mapped[str | None] = mapped_column(sa.String(36))
    work_owner: Mapped[str | None] = mapped_column(sa.String(64))
    work_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: whose order it is: the API key's name, '' when placed with AUTH=off (migration 0006)
    owner: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")

    __table_args__ = (
        # GET /api/orders: newest first, keyset on (created_at, id) (migration 0003)
        sa.Index("ix_orders_created_at_id", "created_at", "id"),
        sa.Index("ix_orders_status_created_at_id", "status", "created_at", "id"),
        sa.Index("ix_orders_client_order_id", "client_order_id", "created_at", "id"),
        # a caller's GET /api/orders under AUTH=keys: its own orders, newest first (migration 0006)
        sa.Index("ix_orders_owner_created_at_id", "owner", "created_at", "id"),
        sa.Index("ix_orders_work_due_at", "work_due_at"),
        # what workers claim from (migration 0002): due orders nobody holds
        sa.Index("ix_orders_claimable", "work_due_at", postgresql_where=sa.text("work_owner IS NULL"),
                 sqlite_where=sa.text("work_owner IS NULL")),
    )


class OrderEvent(Base):
    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("orders.id"))
    seq: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    data: Mapped[dict] = mapped_column(sa.JSON)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.UniqueConstraint("order_id", "seq", name="uq_order_events_order_seq"),)


class Worker(Base):
    """A worker process's heartbeat: orders it holds are taken over when it stops beating."""
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class IdempotencyKey(Base):
    """A client's Idempotency-Key: the request it was first sent with (a fingerprint) and
    the answer it got, so a retry gets the same answer and creates nothing. Unique per
    (caller, key): the constraint, not a read-then-write, decides between racing requests.
    Written in the same transaction as the order it made, and removed with it."""
    __tablename__ = "idempotency_keys"

    caller: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    order_id: Mapped[str] = mapped_column(sa.String(36))
    status_code: Mapped[int | None] = mapped_column(sa.Integer)  # None: its request is in progress
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
                      sa.Index("ix_idempotency_keys_order_id", "order_id"))


class ApiKey(Base):
    """An API key (AUTH=keys): its name, which owns the orders placed with it, and a
    SHA-256 of the key; the key itself is shown once by `orderengine keys create` and
    stored nowhere. A revoked key keeps its row (and its name) so its orders keep
    their owner and the name cannot be handed to someone else."""
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    key_hash: Mapped[str] = mapped_column(sa.String(64))  # hex; every request under AUTH=keys looks it up
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (sa.UniqueConstraint("name", name="uq_api_keys_name"),
                      sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"))


orders = Order.__table__
idempotency_keys = IdempotencyKey.__table__
order_events = OrderEvent.__table__
workers = Worker.__table__
api_keys = ApiKey.__table__
