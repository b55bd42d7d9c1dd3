"""The database engine, configured the same way for SQLite and PostgreSQL.

SQLite (the embedded default) gets WAL and a busy timeout, and writers that go
through `writing(engine)` begin with `BEGIN IMMEDIATE`, so threads writing at
once queue up instead of failing while readers take no lock; PostgreSQL gets a
connection pool sized for a worker's threads. The engine's tables and the
simulated chain's are reached through engines made here.
"""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def normalize_url(url: str) -> str:
    """postgres:// and postgresql:// mean psycopg 3 here."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def create_db_engine(url: str, pool_size: int = 15) -> Engine:
    """On PostgreSQL a pool of `pool_size` connections plus 5 for bursts (a worker needs
    one per thread, and the server's 100 connections are shared by every process).
    A statement's parameters never appear in its errors (`hide_parameters`): they are
    clients' data, and errors get logged."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_size=pool_size, max_overflow=5,
                            pool_recycle=1800, hide_parameters=True)


def _sqlite_engine(url: str) -> Engine:
    path = sa.engine.make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                              pool_size=20, max_overflow=20, hide_parameters=True)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver glue
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - driver glue
        # writers (see `writing`) take the lock up front and queue for it; readers do not
        conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get("sqlite_begin", "DEFERRED"))

    return engine


def writing(engine: Engine) -> Engine:
    """The same engine for transactions that write: on SQLite they take the write
    lock when they begin, so concurrent writers wait their turn (busy_timeout)."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
