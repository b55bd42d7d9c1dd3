"""The chain's own database engines: one per URL per process.

Configured like any client of a shared SQL ledger: on SQLite, WAL and a busy
timeout, and writers (`writing`) begin with BEGIN IMMEDIATE so they queue for the
lock instead of failing; on PostgreSQL, a pool. The chain imports nothing of the
engine's but the venue contract, as a plugin's network client would not.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

POOL_SIZE = 15
#: the chain's own time limits on PostgreSQL, as any network client would have: a connection
#: within this, and every statement (lock waits included) cancelled by the server after that
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """postgres:// and postgresql:// mean psycopg 3 here."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_for(url: str) -> Engine:
    """One engine per database per process, shared by every venue and chain object."""
    url = normalize_url(url)
    with _engines_lock:
        if url not in _engines:
            _engines[url] = _sqlite_engine(url) if url.startswith("sqlite") else sa.create_engine(
                url, pool_size=POOL_SIZE, max_overflow=5, pool_recycle=1800, hide_parameters=True,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S,
                              "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"})
        return _engines[url]


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction; on SQLite it takes the write lock up front."""
    with engine.execution_options(sqlite_begin="IMMEDIATE").connect() as conn:
        with conn.begin():
            yield conn


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
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - driver glue
        conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get("sqlite_begin", "DEFERRED"))

    return engine
