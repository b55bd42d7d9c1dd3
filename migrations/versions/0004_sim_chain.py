"""the simulated chain's tables: sim_pools, sim_transactions, sim_market (with its lease)

The chain used to create its tables itself at start-up; a database that has them
already gets only what is new (the market lease, the index of pending rows).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BASE_UNITS = sa.String(40)  # u64 amounts as decimal text: exact on SQLite and PostgreSQL


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "sim_pools" not in existing:
        op.create_table(
            "sim_pools",
            sa.Column("pool_id", sa.String(64), primary_key=True),
            sa.Column("program", sa.String(32), nullable=False),
            sa.Column("state", sa.Text, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
        )
    if "sim_transactions" not in existing:
        op.create_table(
            "sim_transactions",
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
        )
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("sim_transactions")}
    if "ix_sim_transactions_pending" not in indexes:
        op.create_index("ix_sim_transactions_pending", "sim_transactions", ["status", "confirm_at"])
    if "sim_market" not in existing:
        op.create_table(
            "sim_market",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("tick", sa.BigInteger, nullable=False),
            sa.Column("anchors", sa.Text, nullable=False),
            sa.Column("holder", sa.String(128)),
            sa.Column("lease_until", sa.DateTime(timezone=True)),
        )
    else:
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("sim_market")}
        with op.batch_alter_table("sim_market") as batch:
            if "holder" not in columns:
                batch.add_column(sa.Column("holder", sa.String(128)))
            if "lease_until" not in columns:
                batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_table("sim_market")
    op.drop_index("ix_sim_transactions_pending", "sim_transactions")
    op.drop_table("sim_transactions")
    op.drop_table("sim_pools")
