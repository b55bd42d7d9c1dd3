"""The task queue (Huey): wake-ups for the workers, not the orders themselves.

A message on the queue says "there are due orders in the database"; the worker
that takes it claims them there, many at a time (pump.py). Redis when REDIS_URL
is set, otherwise a queue in this process. Nothing here is the source of truth:
a message lost with Redis or a killed process costs at most CLAIM_POLL_S of
delay, since every worker also looks in the database on its own.

Messages are JSON (`JsonSerializer`), never pickles: Huey's default would unpickle
whatever it finds in the queue, so anyone able to write to Redis could run code in
every worker. A payload that is not a message orderengine wrote is rejected and
logged, and nothing of it runs.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from typing import Any

from huey import MemoryHuey, PriorityRedisHuey
from huey.registry import Message
from huey.serializer import Serializer
from huey.storage import MemoryStorage

from orderengine.logs import brief

log = logging.getLogger(__name__)

QUEUE_NAME = "orderengine"
#: Wake-ups for orders already in flight (hand-back, takeover) go before those for new orders.
PRIORITY_IN_FLIGHT = 10
PRIORITY_NEW_ORDER = 0


class RejectedMessage(ValueError):
    """A queue payload that is not a message orderengine wrote; it is dropped, never run."""


class JsonSerializer(Serializer):
    """Huey's task messages as JSON: `{"v": 1, "message": {field: value}}`, the fields of
    Huey's `Message`, with datetimes as `{"$dt": iso}`, timedeltas as `{"$td": seconds}`,
    tuples as lists and nested messages (on_complete, on_error) as `{"$msg": {...}}`.
    Anything else is refused when writing, so every message can be read back."""

    VERSION = 1

    def _serialize(self, data: Any) -> bytes:
        if not isinstance(data, Message):
            raise TypeError(f"only task messages go on the queue, not {type(data).__name__}")
        return json.dumps({"v": self.VERSION, "message": _encode_message(data)},
                          separators=(",", ":")).encode()

    def _deserialize(self, data: bytes) -> Message:
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("v") != self.VERSION:
                raise ValueError("not an orderengine message")
            return _decode_message(body["message"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.error("rejected a queue payload that is not an orderengine JSON message",
                      extra={"error": brief(exc, 200), "size": len(data or b""), "head": repr(bytes(data or b"")[:16])})
            raise RejectedMessage(str(exc)) from None


def _encode_message(message: Message) -> dict[str, Any]:
    return {field: _encode(value) for field, value in zip(Message._fields, message)}


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Message):
        return {"$msg": _encode_message(value)}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$td": value.total_seconds()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) and not k.startswith("$") for k in value):
        return {k: _encode(v) for k, v in value.items()}
    raise TypeError(f"a task message cannot carry {type(value).__name__}")


def _decode_message(fields: Any) -> Message:
    if not isinstance(fields, dict) or not set(fields) <= set(Message._fields) or "name" not in fields:
        raise ValueError("not a task message")
    decoded = {k: _decode(v) for k, v in fields.items()}
    if not isinstance(decoded["name"], str) or not isinstance(decoded.get("id"), str):
        raise ValueError("a task message names its task and id")
    for key in ("args", "chord_config"):  # Huey unpacks these as tuples
        if isinstance(decoded.get(key), list):
            decoded[key] = tuple(decoded[key])
    if decoded.get("kwargs") is not None and not isinstance(decoded["kwargs"], dict):
        raise ValueError("kwargs must be an object")
    return Message(**decoded)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "$msg" in value:
            return _decode_message(value["$msg"])
        if len(value) == 1 and "$dt" in value:
            return dt.datetime.fromisoformat(value["$dt"])
        if len(value) == 1 and "$td" in value:
            return dt.timedelta(seconds=float(value["$td"]))
        return {k: _decode(v) for k, v in value.items()}
    return value


class BlockingMemoryStorage(MemoryStorage):
    """Huey's memory storage, but a consumer waits on a condition instead of
    polling with a back-off that grows to seconds."""
    blocking = True

    def __init__(self, *args, read_timeout: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ready = threading.Condition(self._lock)
        self.read_timeout = read_timeout

    def enqueue(self, data, priority=None):
        with self._ready:
            super().enqueue(data, priority)
            self._ready.notify()

    def dequeue(self):
        with self._ready:
            data = super().dequeue()
            if data is None:
                self._ready.wait(self.read_timeout)
                data = super().dequeue()
            return data


class InProcessHuey(MemoryHuey):
    storage_class = BlockingMemoryStorage


def build_huey(redis_client=None):
    """Redis (shared by every process) when a client is given, else in-process."""
    if redis_client is not None:
        # the client's pool carries its socket timeouts (runtime.py): read_timeout, the
        # blocking pop's own wait, stays well inside them
        return PriorityRedisHuey(QUEUE_NAME, connection_pool=redis_client.connection_pool, results=False,
                                 utc=True, blocking=True, read_timeout=1, serializer=JsonSerializer())
    return InProcessHuey(QUEUE_NAME, results=False, utc=True, serializer=JsonSerializer())
