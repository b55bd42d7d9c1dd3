"""The `orderengine` command: serve, worker, migrate, venues, keys; order, watch, orders (the client)."""
from __future__ import annotations

import contextlib
import sys

import click

from orderengine.client.commands import register as register_client_commands
from orderengine.config import ConfigError, Settings, load_settings
from orderengine.logs import configure_logging, redact_url


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"orderengine: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.log_level)
    return settings


@click.group()
def main() -> None:
    """orderengine: a Solana DEX market-order execution engine."""


register_client_commands(main)


@main.command()
def serve() -> None:
    """API + WebSocket + worker in one process (the embedded default)."""
    from orderengine.migrate import upgrade
    from orderengine.server import EmbeddedServer

    settings = _settings()
    try:
        settings.auth_mode  # HOST reachable from other machines and AUTH unset: stop before anything runs
    except ConfigError as exc:
        click.echo(f"orderengine: {exc}", err=True)
        sys.exit(2)
    upgrade(settings.database_url)
    click.echo(f"orderengine serving on http://{settings.host}:{settings.port} "
               f"({'embedded' if settings.embedded else 'redis'} queue, {redact_url(settings.database_url)})", err=True)
    EmbeddedServer(settings).run()


@main.command()
def worker() -> None:
    """A production worker: executes orders from the shared queue."""
    from orderengine.runtime import Runtime
    from orderengine.worker import run_worker

    settings = _settings()
    if settings.embedded:
        click.echo("orderengine worker needs REDIS_URL (without it, `orderengine serve` runs the "
                   "worker in-process)", err=True)
        sys.exit(2)
    run_worker(Runtime(settings))


@main.command()
def migrate() -> None:
    """Apply database migrations (idempotent)."""
    from orderengine.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    click.echo("database is at the newest schema", err=True)


@main.command()
def venues() -> None:
    """List the venue plugins found, their fees and pools, and any that failed to load."""
    from orderengine.amounts import decimal_str
    from orderengine.migrate import upgrade
    from orderengine.plugins import load_venues

    settings = _settings()
    upgrade(settings.database_url)  # the simulated venues' pools live in the chain's tables
    registry = load_venues(settings)
    for name, venue in sorted(registry.venues.items()):
        click.echo(f"{name}")
        for p in venue.pools():
            click.echo(f"  {p.pool_id}  {p.token_a}/{p.token_b}  fee {decimal_str(p.fee_pct)}%  "
                       f"mid {decimal_str(p.mid_price)}")
    for name, error in sorted(registry.failures.items()):
        click.echo(f"{name}  FAILED TO LOAD: {error}")
    sys.exit(0 if registry.venues else 1)


@main.group()
def keys() -> None:
    """API keys for AUTH=keys: create, list, revoke."""


@contextlib.contextmanager
def _api_keys():
    """The api_keys table of the configured database (migrated first, like `serve`)."""
    from orderengine.db import create_db_engine
    from orderengine.keys import ApiKeys
    from orderengine.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    engine = create_db_engine(settings.database_url, pool_size=1)
    try:
        yield ApiKeys(engine)
    finally:
        engine.dispose()


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Make a key named NAME; the key is printed once, alone on the last line (only its hash is kept)."""
    from orderengine.keys import NAME_RULE, KeyNameTaken, valid_name

    if not valid_name(name):
        raise click.BadParameter(f"a key name is {NAME_RULE}", param_hint="NAME")
    try:
        with _api_keys() as api_keys:
            key = api_keys.create(name)
    except KeyNameTaken:
        click.echo(f"orderengine: a key named {name!r} exists already (a revoked key keeps its name: "
                   "its orders are still its own); choose another name", err=True)
        sys.exit(1)
    click.echo(f"API key {name!r} created. It is shown this once and stored nowhere: keep it now. "
               "Send it as `Authorization: Bearer <key>`.", err=True)
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """Names, creation times and whether revoked; never the keys."""
    from orderengine.clock import iso

    with _api_keys() as api_keys:
        listed = api_keys.list()
    if not listed:
        click.echo("no API keys yet: `orderengine keys create NAME` makes one", err=True)
        return
    width = max(len("NAME"), *(len(k.name) for k in listed))
    click.echo(f"{'NAME':<{width}}  {'CREATED':<24}  STATUS")
    for k in listed:
        status = f"revoked {iso(k.revoked_at)}" if k.revoked else "active"
        click.echo(f"{k.name:<{width}}  {iso(k.created_at):<24}  {status}")


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the key named NAME: every process refuses it from the next request on."""
    from orderengine.clock import iso

    with _api_keys() as api_keys:
        revoked = api_keys.revoke(name)
    if revoked is None:
        click.echo(f"orderengine: no key is named {name!r} (`orderengine keys list` shows them)", err=True)
        sys.exit(1)
    click.echo(f"API key {name!r} is revoked (since {iso(revoked.revoked_at)}): it is refused from now on.",
               err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
