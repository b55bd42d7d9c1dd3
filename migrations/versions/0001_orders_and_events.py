"""orders, order_events, workers

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

from orderengine.models import Amount, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("token_in", sa.String(16), nullable=False),
        sa.Column("token_out", sa.String(16), nullable=False),
        sa.Column("amount_in", Amount(), nullable=False),
        sa.Column("slippage_bps", sa.Integer, nullable=False),
        sa.Column("client_order_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("venue", sa.String(64)),
        sa.Column("tx_hash", sa.String(128)),
        sa.Column("amount_out", Amount()),
        sa.Column("executed_price", Amount()),
        sa.Column("error", sa.JSON),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("work_token", sa.String(36)),
        sa.Column("work_owner", sa.String(64)),
        sa.Column("work_due_at", UTCDateTime()),
    )
    op.create_index("ix_orders_created_at", "orders", ["created_at"])
    op.create_index("ix_orders_status_created_at", "orders", ["status", "created_at"])
    op.create_index("ix_orders_work_due_at", "orders", ["work_due_at"])
    op.create_table(
        "order_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("order_id", sa.String(36), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("order_id", "seq", name="uq_order_events_order_seq"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("order_events")
    op.drop_index("ix_orders_work_due_at", "orders")
    op.drop_index("ix_orders_status_created_at", "orders")
    op.drop_index("ix_orders_created_at", "orders")
    op.drop_table("orders")
