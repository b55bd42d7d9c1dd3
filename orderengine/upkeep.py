"""Venue upkeep: each venue's `maintain()`, about once a second, on a thread of its own.

Runs in every worker process and never on a request or an order's step: the
simulated venues move their market here (one process per deployment actually
plays each tick; see the venue), so a quote is only arithmetic on pool state.
"""
from __future__ import annotations

import logging
import threading
from typing import Mapping

from orderengine.venue import Venue

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


class VenueUpkeep:
    def __init__(self, venues: Mapping[str, Venue], interval_s: float = INTERVAL_S) -> None:
        self.venues = venues
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="venue-upkeep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def run_once(self) -> None:
        for name, venue in sorted(self.venues.items()):
            try:
                venue.maintain()
            except Exception as exc:  # a venue's upkeep must not stop the others'
                log.warning("venue upkeep failed", extra={"venue": name, "error": str(exc)})

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()
