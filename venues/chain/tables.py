"""The chain's tables: pools, the transactions sent to them, and the market's clock.

They live in the `sim_*` tables of the engine's database and are created by its
Alembic migrations (`orderengine migrate`, which `orderengine serve` runs too);
this module describes them for queries and checks that they are there.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

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
    # what is due to land: pending rows are few, so this finds them without a scan
    sa.Index("ix_sim_transactions_pending", "status", "confirm_at"),
)

sim_market = sa.Table(
    "sim_market", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tick", sa.BigInteger, nullable=False),   # the last tick played
    sa.Column("anchors", sa.Text, nullable=False),      # pair -> its first price, JSON
    sa.Column("holder", sa.String(128)),                # the process that plays the ticks ...
    sa.Column("lease_until", sa.DateTime(timezone=True)),  # ... until then, unless it renews
)


class ChainNotMigrated(RuntimeError):
    """The database has no chain tables yet."""


def require_tables(engine: Engine) -> None:
    """Raise ChainNotMigrated, saying what to run, unless every chain table exists."""
    with engine.connect() as conn:
        missing = [t.name for t in metadata.sorted_tables if not sa.inspect(conn).has_table(t.name)]
    if missing:
        raise ChainNotMigrated(
            f"The simulated chain's tables ({', '.join(missing)}) are missing from "
            f"{engine.url.render_as_string(hide_password=True)}: run `orderengine migrate` "
            "(or orderengine.migrate.upgrade(url) in a test).")


#: sim_transactions columns a send writes, with their PostgreSQL array types
_SENT_COLUMNS = {
    "signature": "varchar", "client_tx_id": "varchar", "pool_id": "varchar", "direction": "varchar",
    "amount_in": "varchar", "min_amount_out": "varchar", "decimals_in": "integer",
    "decimals_out": "integer", "status": "varchar", "will_fail": "boolean",
    "confirm_at": "timestamptz", "created_at": "timestamptz",
}
_PG_INSERT_SENT = sa.text(
    f"INSERT INTO sim_transactions ({', '.join(_SENT_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in _SENT_COLUMNS.items())
    + ") ON CONFLICT DO NOTHING")


def insert_sent(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record sent transactions, skipping any whose client tx id is taken already (a
    re-send): one statement. On PostgreSQL its text is the same for any number of rows
    (one array per column), so it is parsed and planned once."""
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_INSERT_SENT, {c: [row[c] for row in rows] for c in _SENT_COLUMNS})
        return
    # with RETURNING, SQLAlchemy sends the rows as one multi-row INSERT (without: one per row)
    conn.execute(insert_ignoring_conflicts(conn, sim_transactions)
                 .returning(sim_transactions.c.signature), rows).all()


def insert_ignoring_conflicts(conn: Connection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, in the connection's dialect: a row whose
    key is taken already is skipped (a re-send, another process's seed)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()
