"""Who is calling (SPEC §6): the caller of every request under /api, on `flask.g.caller`.

AUTH=keys: a request sends `Authorization: Bearer <key>` (a WebSocket may send
`?apiKey=<key>` instead: a browser cannot set headers on one); a missing, unknown or
revoked key is a 401 UNAUTHORIZED with `WWW-Authenticate: Bearer`. A refused
WebSocket is accepted first and then closed with 4401 (its handler calls
`current_caller()`), so every client can read why. AUTH=off: no key, and every
client is one caller, owner ''. The key is looked up on every request (keys.py).

A caller sees only its own orders: views pass `caller.scope` to the store, which
answers another caller's order as not found.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
import time
from dataclasses import dataclass, field

from flask import Flask, current_app, g, jsonify, request

from orderengine.errors import ServiceUnavailable, Unauthorized
from orderengine.intake import ANYONE
from orderengine.keys import ApiKeys, lookup_engine

EXTENSION = "orderengine.auth"
_MISSING_KEY = "An API key is required: send it as Authorization: Bearer <key>."
_BAD_KEY = "The API key is not valid: it is unknown or has been revoked."
REVERIFY_S = 1.0   # an open socket that only listens finds its key revoked within this


def key_revoked() -> Unauthorized:
    """What a socket whose key was revoked while it was open is told before it closes 4401."""
    refusal = Unauthorized(_BAD_KEY)
    refusal.key_refused = True
    return refusal


@dataclass(frozen=True)
class Caller:
    """Who a request acts as."""
    owner: str              # owns the orders it places: the key's name; '' with AUTH=off
    name: str | None        # the key's name; None with AUTH=off
    limit_key: str          # what rate limits count against: key:<owner>, or addr:<client address>
    key: str | None = field(default=None, repr=False)  # as presented: a socket checks it again as it goes

    @property
    def scope(self) -> str | None:
        """The store's owner filter: this caller's orders only (None with AUTH=off:
        there is one caller, who sees every order)."""
        return self.owner if self.name is not None else None


class Auth:
    """One app's authentication: its mode, its keys, and the owners of orders its
    stream sockets filter `subscribe all` by."""

    def __init__(self, mode: str, keys: ApiKeys, owners: "OrderOwners") -> None:
        self.mode = mode
        self.keys = keys
        self.owners = owners
        self._verified: dict[str, float] = {}   # key name -> when it was last found active
        self._verified_lock = threading.Lock()

    def still_active(self, caller: Caller, fresh: bool) -> bool:
        """Whether the caller's key is still active (always, with AUTH=off). A socket asks on
        every message it acts on (`fresh`: one lookup, so a key revoked while the socket is
        open does nothing more once `keys revoke` returned) and once a second while it only
        listens (then one lookup per key and process per second, whatever the sockets'
        number). ServiceUnavailable if the database cannot say."""
        if caller.name is None:
            return True
        now = time.monotonic()
        if not fresh:
            with self._verified_lock:
                if now - self._verified.get(caller.name, float("-inf")) < REVERIFY_S:
                    return True
        active = caller.key is not None and self.keys.name_of(caller.key) == caller.name
        with self._verified_lock:
            if active:
                self._verified[caller.name] = now
            else:
                self._verified.pop(caller.name, None)
        return active

    def caller(self) -> Caller:
        """The caller of the current request; Unauthorized for a missing or bad key."""
        if self.mode == "off":
            return Caller(ANYONE, None, f"addr:{request.remote_addr}")
        key = _presented_key()
        if not key:
            raise Unauthorized(_MISSING_KEY)
        name = self.keys.name_of(key)
        if name is None:
            raise key_revoked()  # RFC 6750: WWW-Authenticate says error="invalid_token"
        return Caller(name, name, f"key:{name}", key)


def init_app(app: Flask, runtime) -> None:
    """Resolve AUTH (ConfigError if HOST is not loopback and AUTH is unset) and guard /api."""
    mode = runtime.settings.auth_mode
    keys = ApiKeys(lookup_engine(runtime.engine, runtime.settings.db_connect_timeout_s,
                                 runtime.settings.db_statement_timeout_ms) if mode == "keys" else runtime.engine)
    app.extensions[EXTENSION] = Auth(mode, keys, OrderOwners(runtime.store))
    app.before_request(_authenticate)
    app.register_error_handler(Unauthorized, _unauthorized)


def current_caller() -> Caller:
    """The request's caller; Unauthorized if it has none (a WebSocket whose key was refused:
    its handler closes it with 4401)."""
    caller = g.get("caller")
    if caller is None:
        raise g.get("auth_refusal") or Unauthorized(_MISSING_KEY)
    return caller


def order_owners() -> "OrderOwners":
    return current_app.extensions[EXTENSION].owners


def key_check(caller: Caller):
    """For a socket's handler: `check(fresh) -> bool`, whether `caller` may go on. When the
    database cannot say, a listening socket goes on (it learns at its next check) and a
    message acted on fails by itself where it needs the database."""
    auth: Auth = current_app.extensions[EXTENSION]

    def check(fresh: bool) -> bool:
        try:
            return auth.still_active(caller, fresh)
        except ServiceUnavailable:
            return True
    return check


def _authenticate():
    if not (request.path == "/api" or request.path.startswith("/api/")):
        return None
    try:
        g.caller = current_app.extensions[EXTENSION].caller()
    except Unauthorized as exc:
        if not _is_socket():
            raise
        g.caller, g.auth_refusal = None, exc  # the socket's handler accepts, says why, closes 4401
    return None


def _unauthorized(exc: Unauthorized):
    response = jsonify({"error": exc.to_dict()})
    response.status_code = exc.http_status
    challenge = 'Bearer realm="orderengine"'
    if getattr(exc, "key_refused", False):
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def _is_socket() -> bool:
    rule = request.url_rule
    return rule is not None and bool(getattr(rule, "websocket", False))


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if _is_socket():  # only a WebSocket may send it in the URL (a URL ends up in logs and histories)
        return request.args.get("apiKey") or None
    return None


class OrderOwners:
    """Whose each order is, for the stream socket's `subscribe all` (AUTH=keys): an event on
    the bus names its order, not its owner, so the owner is read once per order and process
    and remembered (an order's owner never changes). Bounded: the least recently used go."""

    def __init__(self, store, size: int = 50_000) -> None:
        self.store = store
        self.size = size
        self._known: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def owner_of(self, order_id: str) -> str | None:
        """The order's owner; None if there is no such order."""
        with self._lock:
            owner = self._known.get(order_id)
            if owner is not None:
                self._known.move_to_end(order_id)
                return owner
        owner = self.store.owners([order_id]).get(order_id)
        if owner is not None:
            self.remember(order_id, owner)
        return owner

    def remember(self, order_id: str, owner: str) -> None:
        with self._lock:
            self._known[order_id] = owner
            self._known.move_to_end(order_id)
            while len(self._known) > self.size:
                self._known.popitem(last=False)
