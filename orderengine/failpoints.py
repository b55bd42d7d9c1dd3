"""Crash points for tests: `failpoint(name)` SIGKILLs this process when the point is armed.

A test facility, never set in production. The crash matrix (tests/e2e/test_crash_matrix.py)
and `bench soak` arm points through `ORDERENGINE_FAILPOINTS` (read once into Settings,
armed by the process's Runtime) to kill a worker or an API process at an exact step
boundary, as a power cut would: no `finally`, no hand-back, no flushed buffers.

  ORDERENGINE_FAILPOINTS=after_send            die at the first hit of `after_send`
  ORDERENGINE_FAILPOINTS=after_send:3,routed   die at its 3rd hit (or the first `routed`)

Unarmed (the default), `failpoint` is one dict lookup.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

_armed: dict[str, int] = {}   # name -> the hit that kills
_hits: dict[str, int] = {}
_lock = threading.Lock()


def parse(spec: str) -> dict[str, int]:
    """`name[:N],...` -> {name: N}; raises ValueError on a malformed entry."""
    armed: dict[str, int] = {}
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, _, nth = entry.partition(":")
        if not name.strip().replace("_", "").isalnum():
            raise ValueError(f"bad failpoint name {name!r}")
        count = int(nth) if nth else 1
        if count < 1:
            raise ValueError(f"failpoint {name}: the hit must be >= 1, got {count}")
        armed[name.strip()] = count
    return armed


def arm(points: dict[str, int] | None) -> None:
    """Arm exactly these points (None or {}: none), counting hits from zero."""
    with _lock:
        _armed.clear()
        _hits.clear()
        _armed.update(points or {})
    if points:
        log.warning("failpoints armed: this process kills itself at them", extra={"failpoints": points})


def failpoint(name: str) -> None:
    """SIGKILL this process if `name` is armed and this is its fatal hit."""
    if name not in _armed:
        return
    with _lock:
        _hits[name] = hits = _hits.get(name, 0) + 1
        fatal = hits == _armed.get(name)
    if fatal:
        os.kill(os.getpid(), signal.SIGKILL)
