"""Every call to PostgreSQL has a time limit, and liveness is judged on PostgreSQL's clock."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from orderengine.clock import skewed, utcnow
from orderengine.db import create_db_engine
from orderengine.models import workers
from orderengine.store import Work
from orderengine.sweeper import Sweeper
from tests.integration.watching import order_request, wait_for
from venues.chain import engine_for

pytestmark = pytest.mark.integration


def test_a_statement_longer_than_the_limit_is_cancelled_by_the_server(migrated_pg_url):
    engine = create_db_engine(migrated_pg_url, pool_size=1, statement_timeout_ms=200)
    try:
        with engine.connect() as conn:
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.execute(sa.text("SELECT pg_sleep(2)"))
        with engine.connect() as conn:  # the next statement on the pool runs as usual
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_the_engine_s_connections_carry_the_configured_limits(fleet):
    runtime = fleet.runtime(db_statement_timeout_ms=1234, db_connect_timeout_s=3)
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "1234ms"
        assert conn.connection.dbapi_connection.info.get_parameters()["connect_timeout"] == "3"


def test_the_simulated_chain_s_connections_have_limits_too(migrated_pg_url):
    with engine_for(migrated_pg_url).connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "10s"


def last_seen(engine, worker_id: str) -> dt.datetime:
    with engine.connect() as conn:
        return conn.execute(sa.select(workers.c.last_seen).where(workers.c.id == worker_id)).scalar_one()


def test_a_worker_whose_clock_is_an_hour_behind_keeps_its_orders(fleet):
    worker = fleet.worker()
    runtime, services = worker.runtime, worker.runtime.worker
    order_id = runtime.store.create(order_request(), Work("t-1", None, utcnow())).order_id
    runtime.store.set_work(order_id, "t-1", Work("t-1", services.worker_id, utcnow() + dt.timedelta(hours=1)))
    with skewed(-dt.timedelta(hours=1)):  # far more than WORKER_DEAD_AFTER_MS (2 s)
        assert utcnow() < dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=59)  # the engine's clock
        services.sweeper.beat()  # as its heartbeat thread does
    judge = Sweeper(runtime.settings, runtime.store, "honest-host:1:abcd", wake=lambda: None)
    assert judge.sweep() == 0
    assert runtime.store.get(order_id).work_owner == services.worker_id


def test_an_order_whose_commit_answer_was_lost_on_postgres_is_answered_201_and_runs_once(fleet, monkeypatch):
    import threading

    import psycopg

    from orderengine.intake import submit_order
    from tests.integration.watching import status_of

    worker = fleet.worker()
    runtime = worker.runtime
    real = runtime.engine.dialect.do_commit
    left = [1]

    def commit_then_lose_the_answer(dbapi_connection):
        real(dbapi_connection)
        if left[0] and threading.current_thread().name.startswith("intake-writer"):
            left[0] -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(runtime.engine.dialect, "do_commit", commit_then_lose_the_answer)
    accepted = submit_order(runtime, order_request(), idempotency_key="lost-commit")  # a transaction
    assert left == [0]
    wait_for(lambda: status_of(runtime.engine, accepted.order_id) == "confirmed", timeout=30)
    again = submit_order(runtime, order_request(), idempotency_key="lost-commit")
    assert again.order_id == accepted.order_id and again.replayed
