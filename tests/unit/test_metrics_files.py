"""Several processes, one /metrics: the multiprocess directory gunicorn's hooks manage, and the sums read from it."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orderengine import metrics, metrics_files
from orderengine.config import Settings
from tests.scraping import Scrape

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tmp_tempdir(tmp_path, monkeypatch):
    """tempfile's directory is this test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_without_a_directory_gunicorn_makes_one_for_the_workers_and_deletes_it_at_exit(tmp_tempdir):
    environ: dict[str, str] = {}
    made = metrics_files.prepare(environ)
    assert made.is_dir() and made.parent == tmp_tempdir
    assert environ[metrics_files.ENV] == str(made)  # what the workers inherit
    (made / "counter_123.db").write_bytes(b"x")
    metrics_files.remove(environ)
    assert not made.exists()


def test_an_operators_directory_loses_a_previous_runs_files_at_start_and_is_kept_at_exit(tmp_path):
    given = tmp_path / "metrics"
    environ = {metrics_files.ENV: str(given)}
    assert metrics_files.prepare(environ) == given and given.is_dir()  # made if missing
    (given / "counter_1.db").write_bytes(b"x")
    (given / "notes.txt").write_text("the operator's")
    metrics_files.prepare(environ)
    assert sorted(p.name for p in given.iterdir()) == ["notes.txt"]
    metrics_files.remove(environ)
    assert given.is_dir()


def test_a_master_replaced_by_sigusr2_leaves_the_directory_to_its_successor(tmp_tempdir):
    environ: dict[str, str] = {}
    made = metrics_files.prepare(environ)
    (made / "counter_1.db").write_bytes(b"x")
    assert metrics_files.prepare(dict(environ), reexec=True) == made  # the new master
    assert (made / "counter_1.db").exists()
    metrics_files.remove(environ, handing_over=True)  # the old one exits
    assert (made / "counter_1.db").exists()
    metrics_files.remove(environ)
    assert not made.exists()


def test_a_directory_left_by_a_killed_master_is_deleted_when_the_next_one_starts(tmp_tempdir):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    abandoned = metrics_files.prepare({})
    (abandoned / metrics_files.MARKER).write_text(dead.stdout.strip())  # its master was SIGKILLed
    in_use = metrics_files.prepare({})  # by this (live) process
    operators = tmp_tempdir / (metrics_files.PREFIX + "operator")
    operators.mkdir()  # no marker: not ours, never deleted
    metrics_files.prepare({})
    assert not abandoned.exists()
    assert in_use.exists() and operators.exists()


def run_process(directory: Path, code: str) -> int:
    """Run `code` in a new Python process in multiprocess mode on `directory`; its pid."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env[metrics_files.ENV] = str(directory)
    proc = subprocess.run([sys.executable, "-c", f"import os; {code}; print(os.getpid())"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip())


def test_metrics_sum_the_figures_of_every_process_and_a_dead_ones_sockets_leave(tmp_path, runtime):
    directory = tmp_path / "multiproc"
    metrics_files.prepare({metrics_files.ENV: str(directory)})
    feed = ("from orderengine import metrics as m; m.orders_created({n}); m.WEBSOCKETS_OPEN.inc({n}); "
            "m.STEP_SECONDS.labels('route').observe(0.2)")
    first = run_process(directory, feed.format(n=2))
    run_process(directory, feed.format(n=3))
    settings = Settings(environ={metrics_files.ENV: str(directory)})

    def scraped() -> Scrape:
        body, content_type = metrics.scrape(settings, runtime.store)
        assert content_type.startswith("text/plain")
        return Scrape(body.decode())

    summed = scraped()
    assert summed.total("orderengine_orders_created_total") == 5
    assert summed.total("orderengine_order_events_total", status="pending") == 5
    assert summed.total("orderengine_step_seconds_count", step="route") == 2
    assert summed.total("orderengine_websockets_open") == 5
    assert summed.has("orderengine_queue_depth")
    metrics_files.process_exited(first, {metrics_files.ENV: str(directory)})
    after = scraped()
    assert after.total("orderengine_websockets_open") == 3  # its sockets closed with it
    assert after.total("orderengine_orders_created_total") == 5  # what it counted stays counted
