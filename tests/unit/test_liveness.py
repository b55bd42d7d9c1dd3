"""Liveness on one clock: heartbeats stamped and judged with the database's time, on a
thread of their own."""
from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa

from orderengine.clock import skewed, utcnow
from orderengine.intake import submit_order
from orderengine.models import workers
from orderengine.schemas import parse_order_request
from orderengine.store import Work
from orderengine.sweeper import Sweeper
from tests.unit.conftest import SOL_USDC, wait_for


def held_order(runtime, owner: str) -> str:
    order_id = submit_order(runtime, parse_order_request(SOL_USDC)).order_id
    token = runtime.store.get(order_id).work_token
    runtime.store.set_work(order_id, token, Work(token, owner, utcnow() + dt.timedelta(hours=1)))
    return order_id


def last_seen(runtime, worker_id):
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(workers.c.last_seen).where(workers.c.id == worker_id)).scalar_one()


def test_a_worker_whose_clock_is_an_hour_behind_keeps_its_orders(runtime):
    settings = runtime.settings  # WORKER_DEAD_AFTER_MS: 2 s
    skewed_worker = Sweeper(settings, runtime.store, "skewed-host:1:aaaa", wake=lambda: None)
    order_id = held_order(runtime, skewed_worker.worker_id)
    with skewed(-dt.timedelta(hours=1)):  # its host's clock, far more than 2 s off
        skewed_worker.beat()
    other = Sweeper(settings, runtime.store, "honest-host:2:bbbb", wake=lambda: None)
    assert other.sweep() == 0
    assert runtime.store.get(order_id).work_owner == skewed_worker.worker_id


def test_a_worker_whose_clock_is_an_hour_ahead_still_takes_over_from_a_dead_one(runtime):
    dead = Sweeper(runtime.settings, runtime.store, "dead-host:1:aaaa", wake=lambda: None)
    order_id = held_order(runtime, dead.worker_id)
    dead.beat()
    wait_for(lambda: utcnow() - last_seen(runtime, dead.worker_id) > dt.timedelta(seconds=2.2), timeout=5)
    with skewed(dt.timedelta(hours=1)):
        assert Sweeper(runtime.settings, runtime.store, "ahead-host:2:bbbb", wake=lambda: None).sweep() == 1
    assert runtime.store.get(order_id).work_owner is None


def test_a_slow_sweep_does_not_stop_the_heartbeat(runtime, monkeypatch):
    stuck = threading.Event()
    sweeper = Sweeper(runtime.settings, runtime.store, "busy-host:1:aaaa", wake=lambda: None)
    sweeper.start()
    try:
        # from now on a sweep takes for ever (a database that answers a big query slowly)
        monkeypatch.setattr(sweeper, "sweep", lambda: stuck.wait(30))
        first = last_seen(runtime, sweeper.worker_id)
        wait_for(lambda: last_seen(runtime, sweeper.worker_id) > first + dt.timedelta(seconds=1), timeout=10)
    finally:
        stuck.set()
        sweeper.stop(hand_back=False)
