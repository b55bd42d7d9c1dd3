"""Crash points: armed through ORDERENGINE_FAILPOINTS, they SIGKILL their own process."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from orderengine import failpoints
from orderengine.config import ConfigError, settings_from

KILL_AT = """
from orderengine import failpoints
failpoints.arm(failpoints.parse({spec!r}))
for i in range(1, 6):
    print(i, flush=True)
    failpoints.failpoint("here")
"""


def run(spec: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_AT.format(spec=spec)], capture_output=True,
                          text=True, timeout=30)


def test_an_armed_point_kills_its_process_with_sigkill_at_the_nth_hit():
    done = run("here:3")
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"]


def test_a_point_not_armed_does_nothing():
    done = run("elsewhere")
    assert done.returncode == 0 and done.stdout.split() == ["1", "2", "3", "4", "5"]


def test_the_variable_is_read_into_settings_and_checked():
    assert settings_from({"ORDERENGINE_FAILPOINTS": "after_send:2, routing"}).failpoints == {
        "after_send": 2, "routing": 1}
    assert settings_from({}).failpoints == {}
    with pytest.raises(ConfigError, match="ORDERENGINE_FAILPOINTS"):
        settings_from({"ORDERENGINE_FAILPOINTS": "after_send:0"})


def test_arming_again_replaces_the_points_and_resets_the_counts():
    failpoints.arm({"somewhere": 2})
    failpoints.failpoint("somewhere")
    failpoints.arm(None)
    failpoints.failpoint("somewhere")
    failpoints.failpoint("somewhere")  # would have killed pytest if still armed
