"""orders: indexes for GET /api/orders (newest first, keyset on created_at and id)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_created_at_id", "orders", ["created_at", "id"])
    op.create_index("ix_orders_status_created_at_id", "orders", ["status", "created_at", "id"])
    op.create_index("ix_orders_client_order_id", "orders", ["client_order_id", "created_at", "id"])
    op.drop_index("ix_orders_status_created_at", "orders")  # the index above serves its queries
    op.drop_index("ix_orders_created_at", "orders")


def downgrade() -> None:
    op.create_index("ix_orders_created_at", "orders", ["created_at"])
    op.create_index("ix_orders_status_created_at", "orders", ["status", "created_at"])
    op.drop_index("ix_orders_client_order_id", "orders")
    op.drop_index("ix_orders_status_created_at_id", "orders")
    op.drop_index("ix_orders_created_at_id", "orders")
