"""api_keys, and orders.owner: who placed each order (AUTH=keys)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

from orderengine.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),  # SHA-256 of the key, never the key
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    # orders placed before keys existed (or with AUTH=off) belong to the one caller AUTH=off has: ''
    # (a constant default: PostgreSQL 11+ adds the column without rewriting the table)
    op.add_column("orders", sa.Column("owner", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_orders_owner_created_at_id", "orders", ["owner", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_orders_owner_created_at_id", "orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("owner")
    op.drop_table("api_keys")
