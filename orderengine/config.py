"""Settings: read once from the environment (and `.env`), validated at start-up.

Nothing else in the engine reads `os.environ`; everything gets a `Settings`.
A bad value stops start-up with a message naming the variable.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from dotenv import dotenv_values

from orderengine import failpoints
from orderengine.db import normalize_url

DEFAULT_DATABASE_URL = "sqlite:///var/orderengine.db"


class ConfigError(ValueError):
    """A setting has a value the engine cannot run with."""


@dataclass(frozen=True)
class Settings:
    port: int = 3000
    host: str = "127.0.0.1"
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    mock_fail_rate: float = 0.0
    mock_quote_latency_ms: int = 200
    mock_exec_latency_ms: int = 2500
    max_attempts: int = 3
    retry_backoff_ms: int = 500
    worker_concurrency: int = 10
    max_orders_per_minute: int | None = None
    quote_timeout_ms: int = 2000
    #: a MARKET order not submitted this long after it was accepted fails EXPIRED, never sent
    order_ttl_ms: int = 30_000
    #: how long an Idempotency-Key is remembered
    idempotency_ttl_s: int = 86_400
    venues: tuple[str, ...] | None = None
    market_seed: int = 7
    log_level: str = "INFO"
    web_concurrency: int = 2
    web_threads: int = 1000
    #: a worker whose heartbeat is older than this is dead; its orders are taken over
    worker_dead_after_ms: int = 10_000
    sweep_interval_ms: int = 2_000
    # --- who may do what, and how much (SPEC §6) ---
    #: "keys" or "off"; None = off on a loopback HOST, otherwise start-up refuses (see auth_mode)
    auth: str | None = None
    #: order submissions per API key (per client address with AUTH=off) in any 60 s
    rate_limit_per_minute: int = 600
    #: accepted orders not yet submitted, across the deployment; over it: 503 OVERLOADED
    max_queued_orders: int = 10_000
    #: open WebSockets per API key (per client address with AUTH=off); one more: close 4429
    max_sockets_per_key: int = 100
    #: open WebSockets one API process holds; one more: close 1013 (HTTP keeps its own headroom)
    max_sockets_per_process: int = 1_000
    # --- time limits on every call out ---
    #: a venue's execute/status/lookup call that takes longer is abandoned (VENUE_TIMEOUT; see calls.py)
    venue_call_timeout_ms: int = 5_000
    #: a step that breaks this many times in a row ends the order failed (backoff between); where a
    #: transaction may be out, only once the venue has answered about it (README, No order waits forever)
    step_max_failures: int = 5
    db_connect_timeout_s: int = 5
    db_statement_timeout_ms: int = 10_000
    # --- operating it (SPEC §7) ---
    #: a worker serves its Prometheus metrics on this port; unset = not served
    metrics_port: int | None = None
    # --- a test facility ---
    #: crash points this process SIGKILLs itself at ({name: nth hit}; orderengine/failpoints.py)
    failpoints: Mapping[str, int] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def embedded(self) -> bool:
        """No Redis: queue and pub/sub live in this process."""
        return self.redis_url is None

    @property
    def auth_mode(self) -> str:
        """"keys" or "off": AUTH as set, else "off" on a loopback HOST. Raises ConfigError
        when AUTH is unset and HOST is reachable from other machines: the operator must
        choose, rather than an API on the network being open by default."""
        if self.auth is not None:
            return self.auth
        if is_loopback(self.host):
            return "off"
        raise ConfigError(f"AUTH must be set when HOST is not a loopback address (HOST={self.host!r}): "
                          "AUTH=keys to require API keys (create one with `orderengine keys create NAME`), "
                          "or AUTH=off to let anyone who can reach the port use the API")

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name, or "" (every interface)
        return False


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"must be an integer, got {raw!r}") from None
        if lo is not None and value < lo:
            raise ConfigError(f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"must be <= {hi}, got {value}")
        return value
    return parse


def _rate(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"must be a number between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"must be between 0 and 1, got {raw!r}")
    return value


def _database_url(raw: str) -> str:
    url = normalize_url(raw.strip())
    if not (url.startswith("sqlite:") or url.startswith("postgresql+psycopg:")):
        raise ConfigError(f"must be a sqlite:/// or postgresql:// URL, got {_printable_url(raw)!r}")
    return url


def _redis_url(raw: str) -> str | None:
    url = raw.strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"must be a redis:// URL, got {_printable_url(raw)!r}")
    return url


def _printable_url(raw: str) -> str:
    """A URL quoted back in an error without its password."""
    from orderengine.logs import redact_url  # logs imports nothing of ours but the clock
    return redact_url(raw.strip()) or ""


def _names(raw: str) -> tuple[str, ...] | None:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    return names or None


def _auth(raw: str) -> str | None:
    mode = raw.strip().lower()
    if mode not in {"keys", "off"}:
        raise ConfigError(f"must be keys or off, got {raw!r}")
    return mode


def _failpoints(raw: str) -> dict[str, int]:
    try:
        return failpoints.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"must be name[:N],... ({exc})") from None


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"must be DEBUG, INFO, WARNING or ERROR, got {raw!r}")
    return level


#: environment variable -> (Settings field, parser)
VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PORT": ("port", _int(1, 65535)),
    "HOST": ("host", str.strip),
    "DATABASE_URL": ("database_url", _database_url),
    "REDIS_URL": ("redis_url", _redis_url),
    "MOCK_FAIL_RATE": ("mock_fail_rate", _rate),
    "MOCK_QUOTE_LATENCY_MS": ("mock_quote_latency_ms", _int(0, 600_000)),
    "MOCK_EXEC_LATENCY_MS": ("mock_exec_latency_ms", _int(0, 600_000)),
    "MAX_ATTEMPTS": ("max_attempts", _int(1, 100)),
    "RETRY_BACKOFF_MS": ("retry_backoff_ms", _int(0, 3_600_000)),
    "WORKER_CONCURRENCY": ("worker_concurrency", _int(1, 1000)),
    "MAX_ORDERS_PER_MINUTE": ("max_orders_per_minute", _int(1)),
    "QUOTE_TIMEOUT_MS": ("quote_timeout_ms", _int(1, 600_000)),
    "ORDER_TTL_MS": ("order_ttl_ms", _int(1000, 86_400_000)),
    "IDEMPOTENCY_TTL_S": ("idempotency_ttl_s", _int(1, 30 * 86_400)),
    "VENUES": ("venues", _names),
    "MARKET_SEED": ("market_seed", _int()),
    "LOG_LEVEL": ("log_level", _log_level),
    "WEB_CONCURRENCY": ("web_concurrency", _int(1, 64)),
    "WEB_THREADS": ("web_threads", _int(1, 10_000)),
    "WORKER_DEAD_AFTER_MS": ("worker_dead_after_ms", _int(1000)),
    "SWEEP_INTERVAL_MS": ("sweep_interval_ms", _int(100)),
    "AUTH": ("auth", _auth),
    "RATE_LIMIT_PER_MINUTE": ("rate_limit_per_minute", _int(1)),
    "MAX_QUEUED_ORDERS": ("max_queued_orders", _int(1)),
    "MAX_SOCKETS_PER_KEY": ("max_sockets_per_key", _int(1)),
    "MAX_SOCKETS_PER_PROCESS": ("max_sockets_per_process", _int(1, 100_000)),
    "VENUE_CALL_TIMEOUT_MS": ("venue_call_timeout_ms", _int(1, 600_000)),
    "STEP_MAX_FAILURES": ("step_max_failures", _int(1, 1000)),
    "DB_CONNECT_TIMEOUT_S": ("db_connect_timeout_s", _int(1, 600)),
    "DB_STATEMENT_TIMEOUT_MS": ("db_statement_timeout_ms", _int(0, 3_600_000)),
    "METRICS_PORT": ("metrics_port", _int(1, 65535)),
    "ORDERENGINE_FAILPOINTS": ("failpoints", _failpoints),
}


def load_settings(environ: Mapping[str, str] | None = None,
                  dotenv_path: str | os.PathLike[str] | None = ".env") -> Settings:
    """Settings from `.env` (when present) overlaid by the process environment."""
    merged: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return settings_from(merged)


def settings_from(values: Mapping[str, str]) -> Settings:
    kwargs: dict[str, Any] = {}
    errors = []
    for name, (attr, parse) in VARIABLES.items():
        raw = values.get(name)
        if raw is None or (raw.strip() == "" and name != "REDIS_URL"):
            continue
        try:
            kwargs[attr] = parse(raw)
        except ConfigError as exc:
            errors.append(f"{name} {exc}")
    settings = Settings(environ=dict(values), **kwargs) if not errors else None
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    return settings
