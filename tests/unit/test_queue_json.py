"""Huey's messages are JSON that orderengine wrote: nothing in Redis is ever unpickled."""
from __future__ import annotations

import datetime as dt
import json
import logging
import pickle

import fakeredis
import pytest

from huey.registry import Message
from orderengine.queue import JsonSerializer, RejectedMessage, build_huey


class Planted:
    """What an attacker with write access to Redis would plant: unpickling it runs code."""

    ran = False

    def __reduce__(self):
        return (Planted._run, ())

    @staticmethod
    def _run():
        Planted.ran = True
        return "owned"


@pytest.fixture
def huey():
    client = fakeredis.FakeRedis()
    queue = build_huey(client)
    wake = queue.task(name="wake", retries=0)(lambda: None)
    yield queue, client, wake


def raw_messages(client) -> list[bytes]:
    """The queue's members as Redis holds them, less the 8-byte ordering prefix Huey adds."""
    return [member[8:] for key in client.keys("*") if client.type(key) == b"zset"
            for member in client.zrange(key, 0, -1)]


def test_a_queued_wake_up_is_stored_in_redis_as_json(huey):
    queue, client, wake = huey
    queue.enqueue(wake.s(priority=10))
    [raw] = raw_messages(client)
    body = json.loads(raw)
    assert body["v"] == 1 and body["message"]["name"].endswith("wake") and body["message"]["priority"] == 10
    assert queue.dequeue().name.endswith("wake")  # and read back as the task it was


def test_a_message_with_dates_and_nested_messages_survives_the_round_trip():
    now = dt.datetime(2026, 11, 26, 10, 0, 0, 123000)
    inner = Message("id-2", "wake", None, 0, 0, None, (), {}, None, None, None, None, None, None, None)
    message = Message("id-1", "wake", now, 2, 1.5, 10, (1, "a"), {"k": [1, 2]}, inner, None,
                      dt.timedelta(seconds=30), now.replace(tzinfo=dt.timezone.utc), 5, None, 1.15)
    serializer = JsonSerializer()
    assert serializer.deserialize(serializer.serialize(message)) == message


def test_a_pickle_planted_in_the_queue_is_rejected_and_logged_never_run(huey, caplog):
    queue, client, wake = huey
    queue.enqueue(wake.s(priority=0))
    [key] = [k for k in client.keys("*") if client.type(k) == b"zset"]
    client.zadd(key, {b"\0" * 8 + pickle.dumps(Planted()): -100})  # first out
    with caplog.at_level(logging.ERROR, logger="orderengine.queue"):
        with pytest.raises(RejectedMessage):
            queue.dequeue()
    assert not Planted.ran
    assert any("rejected a queue payload" in r.getMessage() for r in caplog.records)
    assert queue.dequeue().name.endswith("wake")  # the genuine message behind it is unharmed


@pytest.mark.parametrize("payload", [b"\x80\x04K\x01.", b"[]", b'{"v": 1, "message": {"id": "x"}}',
                                     b'{"v": 2, "message": {}}', "\u00e9".encode("latin-1")])
def test_anything_but_an_orderengine_message_is_rejected(payload):
    with pytest.raises(RejectedMessage):
        JsonSerializer().deserialize(payload)


def test_only_plain_data_can_be_put_on_the_queue():
    message = Message("id-1", "wake", None, 0, 0, None, (object(),), {}, None, None, None, None, None, None, None)
    with pytest.raises(TypeError):
        JsonSerializer().serialize(message)
