"""Alembic on the real PostgreSQL: the schema the engine relies on, applied idempotently."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from orderengine.migrate import alembic_config, upgrade
from venues.chain import metadata as chain_metadata

pytestmark = pytest.mark.integration


@pytest.fixture
def inspector_after_two_upgrades(pg_url):
    upgrade(pg_url)
    upgrade(pg_url)  # a second run (another process starting, a re-deploy) changes nothing
    engine = sa.create_engine(pg_url)
    try:
        yield sa.inspect(engine), engine
    finally:
        engine.dispose()


def test_migrations_applied_twice_leave_the_engine_tables_at_head(inspector_after_two_upgrades, pg_url):
    inspector, engine = inspector_after_two_upgrades
    assert {"orders", "order_events", "workers", "alembic_version"} <= set(inspector.get_table_names())
    head = ScriptDirectory.from_config(alembic_config(pg_url)).get_current_head()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head]


def test_the_chain_tables_have_every_column_the_chain_reads(inspector_after_two_upgrades):
    inspector, _ = inspector_after_two_upgrades
    for table in chain_metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys()), table.name


def test_the_event_log_is_unique_on_order_and_seq(inspector_after_two_upgrades):
    inspector, _ = inspector_after_two_upgrades
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("order_events")}
    assert ("order_id", "seq") in uniques


def test_amount_columns_are_numeric_on_postgres(inspector_after_two_upgrades):
    inspector, _ = inspector_after_two_upgrades
    columns = {c["name"]: c["type"] for c in inspector.get_columns("orders")}
    for name in ("amount_in", "amount_out", "executed_price"):
        assert isinstance(columns[name], sa.Numeric) and not isinstance(columns[name], sa.Float), name


def test_the_migrated_postgres_schema_is_the_models(pg_url):
    from tests.unit.test_migrations import schema_differences
    assert schema_differences(pg_url) == []


def test_an_api_key_is_stored_as_its_hash_and_found_by_an_index(inspector_after_two_upgrades):
    inspector, _ = inspector_after_two_upgrades
    assert {c["name"] for c in inspector.get_columns("api_keys")} == {
        "id", "name", "key_hash", "created_at", "revoked_at"}
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("api_keys")}
    assert {("name",), ("key_hash",)} <= uniques
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("orders")}
    assert indexes["ix_orders_owner_created_at_id"] == ["owner", "created_at", "id"]
