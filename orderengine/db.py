"""The database engine, configured the same way for SQLite and PostgreSQL.

SQLite (the embedded default) gets WAL and a busy timeout, and writers that go
through `writing(engine)` begin with `BEGIN IMMEDIATE`, so threads writing at
once queue up instead of failing while readers take no lock; PostgreSQL gets a
connection pool sized for a worker's threads. The engine's tables and the
simulated chain's are reached through engines made here.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

#: what a connection to PostgreSQL may take, and a statement on it, unless told otherwise
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000


def normalize_url(url: str) -> str:
    """postgres:// and postgresql:// mean psycopg 3 here."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def create_db_engine(url: str, pool_size: int = 15, connect_timeout_s: int = CONNECT_TIMEOUT_S,
                     statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> Engine:
    """On PostgreSQL a pool of `pool_size` connections plus 5 for bursts (a worker needs
    one per thread, and the server's 100 connections are shared by every process), each
    opened within `connect_timeout_s` and every statement on it cancelled by the server
    after `statement_timeout_ms` (0: no limit, for migrations), lock waits included: a
    database that hangs fails the call instead of holding its thread for ever.
    A statement's parameters never appear in its errors (`hide_parameters`): they are
    clients' data, and errors get logged."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_size=pool_size, max_overflow=5, pool_recycle=1800,
                            hide_parameters=True, connect_args=pg_connect_args(connect_timeout_s, statement_timeout_ms))


def pg_connect_args(connect_timeout_s: int, statement_timeout_ms: int) -> dict[str, Any]:
    """libpq's connect_timeout, and statement_timeout set for the session at connect."""
    return {"connect_timeout": int(connect_timeout_s),
            "options": f"-c statement_timeout={int(statement_timeout_ms)}"}


def database_now(conn: Connection) -> dt.datetime:
    """The database server's clock (UTC): the one clock every process agrees on, so
    liveness (heartbeats, takeover) never depends on how far apart hosts' clocks are."""
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one().astimezone(dt.timezone.utc)
    text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


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
