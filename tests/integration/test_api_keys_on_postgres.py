"""API key lookups on PostgreSQL: one autocommit statement on a pooled connection, which goes
back to the pool as it came (transactions of everyone else still begin and roll back)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from orderengine.db import create_db_engine
from orderengine.errors import ServiceUnavailable
from orderengine.keys import ApiKeys
from orderengine.migrate import upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def one_connection(pg_url):
    """An engine whose pool holds one connection, so every checkout is the same one."""
    upgrade(pg_url)
    engine = create_db_engine(pg_url, pool_size=1)  # overflow is used only with two out at once
    yield engine
    engine.dispose()


def test_a_key_is_found_until_it_is_revoked(one_connection):
    keys = ApiKeys(one_connection)
    key = keys.create("alice")
    assert keys.name_of(key) == "alice"
    keys.revoke("alice")
    assert keys.name_of(key) is None


def test_the_connection_goes_back_to_the_pool_out_of_autocommit(one_connection):
    keys = ApiKeys(one_connection)
    key = keys.create("alice")
    assert keys.name_of(key) == "alice"
    with one_connection.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False
        conn.execute(sa.text("CREATE TEMP TABLE t (x int)"))
        conn.rollback()  # a transaction of its own: rolled back, the table is gone
        assert conn.execute(sa.text("SELECT to_regclass('pg_temp.t')")).scalar() is None


def test_a_connection_killed_under_the_lookup_is_a_503_and_the_next_lookup_works(one_connection):
    keys = ApiKeys(one_connection)
    key = keys.create("alice")
    with one_connection.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    admin = create_db_engine(one_connection.url.render_as_string(hide_password=False), pool_size=1)
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()
    with pytest.raises(ServiceUnavailable):
        keys.name_of(key)
    assert keys.name_of(key) == "alice"  # a fresh connection
