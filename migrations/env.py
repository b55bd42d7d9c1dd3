"""Alembic environment: the URL comes from orderengine's Settings, never from an ini file."""
import sqlalchemy as sa
from alembic import context

from orderengine.db import create_db_engine, writing
from orderengine.models import Base

config = context.config
url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")


def run_migrations_online() -> None:
    engine = create_db_engine(url, pool_size=1, statement_timeout_ms=0)  # an index build may take long
    with writing(engine).connect() as connection:
        if connection.dialect.name == "postgresql":  # two processes migrating at once take turns
            connection.execute(sa.text("SELECT pg_advisory_lock(80111)"))
            connection.commit()
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
