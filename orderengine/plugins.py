"""Venue discovery through the `orderengine.venues` entry point group.

A plugin that fails to import or build is logged by name and left out, and
the failure is kept so /health, GET /api/venues and `orderengine venues` can
say so. Two venues with one name stop start-up: routing by name would be
ambiguous.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from orderengine.config import ConfigError, Settings
from orderengine.logs import redact
from orderengine.venue import ENTRY_POINT_GROUP, Venue, VenueEnvironment

log = logging.getLogger(__name__)


@dataclass
class VenueRegistry:
    venues: dict[str, Venue] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def venue_environment(settings: Settings) -> VenueEnvironment:
    return VenueEnvironment(
        chain_url=settings.database_url, quote_latency_ms=settings.mock_quote_latency_ms,
        exec_latency_ms=settings.mock_exec_latency_ms, fail_rate=settings.mock_fail_rate,
        market_seed=settings.market_seed, environ=settings.environ)


def load_venues(settings: Settings) -> VenueRegistry:
    env = venue_environment(settings)
    registry = VenueRegistry()
    selected = set(settings.venues) if settings.venues else None
    seen: set[str] = set()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in seen:
            raise ConfigError(f"two venue plugins are named {ep.name!r}; uninstall one")
        seen.add(ep.name)
        if selected is not None and ep.name not in selected:
            continue
        try:
            venue = ep.load()(env)
        except Exception as exc:
            registry.failures[ep.name] = redact(f"{type(exc).__name__}: {exc}")
            log.error("venue plugin failed to load; left out",
                      extra={"venue": ep.name, "entry_point": ep.value, "error": str(exc)})
            continue
        if getattr(venue, "name", ep.name) != ep.name:
            log.warning("venue plugin names itself differently from its entry point",
                        extra={"venue": ep.name, "self_name": getattr(venue, "name", None)})
        registry.venues[ep.name] = venue
    if selected:
        missing = selected - seen
        if missing:
            raise ConfigError(f"VENUES names venues that are not installed: {', '.join(sorted(missing))}")
    log.info("venues loaded", extra={"venues": sorted(registry.venues),
                                     "failed": sorted(registry.failures)})
    return registry
