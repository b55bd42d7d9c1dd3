"""Time, in one place: UTC, and ISO 8601 with milliseconds and Z.

`utcnow` is this process's clock, used for what one process decides alone (due
times, event times). Liveness between processes is judged on the database's
clock instead (`db.database_now`). `skewed` moves this process's clock, so a
test can show that a worker whose host clock is off is not taken for dead.
"""
from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from typing import Iterator

_offset = dt.timedelta(0)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + _offset


@contextmanager
def skewed(by: dt.timedelta) -> Iterator[None]:
    """This process's clock runs `by` ahead (negative: behind) inside the block."""
    global _offset
    before, _offset = _offset, _offset + by
    try:
        yield
    finally:
        _offset = before


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    text = moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def after_ms(ms: float, start: dt.datetime | None = None) -> dt.datetime:
    return (start or utcnow()) + dt.timedelta(milliseconds=ms)
