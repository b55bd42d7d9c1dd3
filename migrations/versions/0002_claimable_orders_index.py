"""orders: a partial index on the orders workers may claim

Workers claim due orders that nobody holds (`work_owner IS NULL AND work_due_at <=
now`, see OrderStore.claim_due). The plain index on work_due_at also lists every
order a worker holds while it waits for a confirmation, which a claim would walk
past each time; this one lists only the claimable ones.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNHELD = sa.text("work_owner IS NULL")


def upgrade() -> None:
    op.create_index("ix_orders_claimable", "orders", ["work_due_at"],
                    postgresql_where=UNHELD, sqlite_where=UNHELD)


def downgrade() -> None:
    op.drop_index("ix_orders_claimable", "orders")
