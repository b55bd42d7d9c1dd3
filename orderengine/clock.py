"""Time, in one place: UTC, and ISO 8601 with milliseconds and Z."""
from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    text = moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def after_ms(ms: float, start: dt.datetime | None = None) -> dt.datetime:
    return (start or utcnow()) + dt.timedelta(milliseconds=ms)
