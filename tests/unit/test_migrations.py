"""The migrations build exactly the tables models.py declares (columns, indexes, constraints)."""
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from orderengine.migrate import upgrade
from orderengine.models import Base


def schema_differences(url: str) -> list:
    upgrade(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                # the simulated chain's tables have models of their own (venues/chain)
                "include_name": lambda name, kind, parent: kind != "table" or name in Base.metadata.tables})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_the_migrated_sqlite_schema_is_the_models(sqlite_url):
    assert schema_differences(sqlite_url) == []
