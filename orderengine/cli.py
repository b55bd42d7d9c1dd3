"""The `orderengine` command: serve, worker, migrate, venues; order, watch, orders (the client)."""
from __future__ import annotations

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


if __name__ == "__main__":  # pragma: no cover
    main()
