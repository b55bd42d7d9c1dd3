"""API keys (AUTH=keys): made, listed and revoked by `orderengine keys`, looked up per request.

A key is `oe_` + 43 url-safe characters (32 bytes from `secrets`). Only its SHA-256 is
stored. A plain, fast, unsalted hash is the right one here: salts and slow hashes
(bcrypt, scrypt) protect passwords, which people choose and which can be guessed;
a 256-bit random key cannot be guessed, whatever the hash, so a slow hash would only
make every request slower. And a hash the same for every process is what lets a
request find its key with one indexed lookup (`uq_api_keys_key_hash`).

Every request looks its key up in the database: nothing is cached, so `keys revoke`
takes effect, on every process, for the very next request. That lookup is the one
query on the hot path of POST /api/orders/execute, so it is made on the pooled DBAPI
connection itself, as one autocommit statement: through a SQLAlchemy Connection it took
BEGIN + SELECT + ROLLBACK and 0.4-0.6 ms of CPU, this way one round trip and 0.15 ms
(32 gevent greenlets on PostgreSQL), and bench intake lost half its rate with keys.
On PostgreSQL the API's lookups have a small pool of their own (`lookup_engine`): taking
connections from the engine's pool, 32 concurrent requests per process starved the intake's
writer and churned overflow connections, and POST latency rose tenfold.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from orderengine.clock import utcnow
from orderengine.db import pg_connect_args, writing
from orderengine.errors import ServiceUnavailable
from orderengine.models import api_keys

KEY_PREFIX = "oe_"
KEY_BYTES = 32
#: what a key sent by a client may look like; anything else is refused without a lookup
_KEY_FORMAT = re.compile(r"oe_[A-Za-z0-9_-]{20,100}")
NAME_FORMAT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEYS_UNAVAILABLE = "The database is not available; the API key could not be checked."
NAME_RULE = "1 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"


class KeyNameTaken(Exception):
    """A key (active or revoked) already has this name."""


@dataclass(frozen=True)
class KeyInfo:
    """What `keys list` shows: never the key."""
    name: str
    created_at: Any
    revoked_at: Any

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def valid_name(name: str) -> bool:
    return NAME_FORMAT.fullmatch(name) is not None


_LOOKUP = "SELECT name FROM api_keys WHERE key_hash = {} AND revoked_at IS NULL"  # uq_api_keys_key_hash


#: connections one API process keeps for key lookups (PostgreSQL), none opened beyond them
LOOKUP_POOL_SIZE = 4


def lookup_engine(engine: Engine, connect_timeout_s: int, statement_timeout_ms: int) -> Engine:
    """The engine the API's per-request lookups use: on PostgreSQL a pool of its own,
    LOOKUP_POOL_SIZE connections and no overflow (a burst waits its turn, briefly, rather
    than opening connections), with the same time limits as every other connection and
    no parameters in its errors (they would be key hashes); on SQLite the engine itself."""
    if engine.dialect.name != "postgresql":
        return engine
    return sa.create_engine(engine.url, pool_size=LOOKUP_POOL_SIZE, max_overflow=0, pool_recycle=1800,
                            pool_timeout=5, hide_parameters=True,
                            connect_args=pg_connect_args(connect_timeout_s, statement_timeout_ms))


class ApiKeys:
    """The api_keys table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = writing(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._lookup = _LOOKUP.format("?" if engine.dialect.paramstyle == "qmark" else "%s")

    def name_of(self, key: str) -> str | None:
        """The name of this key if it is active; None for an unknown, revoked or malformed
        one. One indexed lookup (a malformed key costs none); ServiceUnavailable if the
        database fails it."""
        if _KEY_FORMAT.fullmatch(key) is None:
            return None
        try:
            pooled = self.engine.raw_connection()
        except (self.engine.dialect.loaded_dbapi.Error, DBAPIError):
            raise ServiceUnavailable(_KEYS_UNAVAILABLE) from None
        try:
            conn = pooled.driver_connection
            if self._postgres:
                conn.autocommit = True  # one statement: no BEGIN, no ROLLBACK on the way back to the pool
            try:
                row = conn.execute(self._lookup, (key_hash(key),)).fetchone()
            finally:
                if self._postgres:
                    conn.autocommit = False
        except self.engine.dialect.loaded_dbapi.Error as exc:
            pooled.invalidate(exc)  # whatever went wrong, this connection is not handed out again
            raise ServiceUnavailable(_KEYS_UNAVAILABLE) from None
        finally:
            pooled.close()
        return None if row is None else row[0]

    def create(self, name: str) -> str:
        """A new key named `name`; returns the key, which is stored nowhere (only its hash).
        KeyNameTaken if any key, revoked or not, has that name: a name owns its orders."""
        if not valid_name(name):
            raise ValueError(f"a key name is {NAME_RULE}")
        key = new_key()
        try:
            with self.writer.begin() as conn:
                conn.execute(sa.insert(api_keys).values(name=name, key_hash=key_hash(key),
                                                         created_at=utcnow(), revoked_at=None))
        except IntegrityError:
            raise KeyNameTaken(name) from None
        return key

    def list(self) -> list[KeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at)
                                .order_by(api_keys.c.created_at, api_keys.c.name)).all()
        return [KeyInfo(r.name, r.created_at, r.revoked_at) for r in rows]

    def revoke(self, name: str) -> KeyInfo | None:
        """Revoke the key named `name` (committed when this returns); the key as it is
        now, or None if no key has that name. Revoking twice changes nothing."""
        with self.writer.begin() as conn:
            conn.execute(sa.update(api_keys)
                         .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=utcnow()))
            row = conn.execute(sa.select(api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at)
                               .where(api_keys.c.name == name)).one_or_none()
        return None if row is None else KeyInfo(row.name, row.created_at, row.revoked_at)
