"""An order event as stored, published and streamed."""
from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import Any

from orderengine.clock import iso
from orderengine.lifecycle import Status, is_terminal


@dataclass(frozen=True)
class Event:
    order_id: str
    seq: int
    status: Status
    at: dt.datetime
    attempt: int
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status)

    def to_dict(self) -> dict[str, Any]:
        return {"orderId": self.order_id, "seq": self.seq, "status": self.status.value,
                "at": iso(self.at), "attempt": self.attempt, "data": self.data}

    def to_json(self) -> str:
        """The event as sent on sockets and the bus; encoded once, however many sockets send it."""
        return self._json

    @functools.cached_property
    def _json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> "Event":
        return cls(order_id=body["orderId"], seq=int(body["seq"]), status=Status(body["status"]),
                   at=dt.datetime.fromisoformat(body["at"].replace("Z", "+00:00")),
                   attempt=int(body["attempt"]), data=body["data"])

    @classmethod
    def from_row(cls, row: Any) -> "Event":
        return cls(order_id=row.order_id, seq=row.seq, status=Status(row.status),
                   at=row.at, attempt=row.attempt, data=row.data)
