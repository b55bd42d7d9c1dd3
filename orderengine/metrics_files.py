"""The directory where gunicorn's processes keep their metrics (prometheus-client's multiprocess mode).

Each process writes its counters to files in PROMETHEUS_MULTIPROC_DIR and /metrics sums them
(orderengine/metrics.py). gunicorn.conf.py calls these from the master's hooks: `prepare`
before the workers fork, `process_exited` when one ends (its live gauges, the open sockets,
stop counting; its counters stay in the sums), `remove` when gunicorn stops.

prometheus-client picks its mode when it is first imported, from the environment: this module
must not import it at load time, and the master must not load the app (no `preload_app`)
before `prepare` has set the variable.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import MutableMapping

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "orderengine-metrics-"
#: in a directory `prepare` made (and so may delete), holding the pid of the master that uses it;
#: an operator's own directory is only emptied
MARKER = ".made-by-orderengine"


def prepare(environ: MutableMapping[str, str] = os.environ, reexec: bool = False) -> Path:
    """The directory for this gunicorn's processes, set in `environ` for the workers to inherit.

    The operator's PROMETHEUS_MULTIPROC_DIR when set (created if missing; its metric files are
    deleted at a fresh start, so a previous run's figures are not summed in), otherwise a new
    temporary directory. `reexec`: this master replaces another (SIGUSR2), whose processes still
    write to the directory it inherited: nothing is deleted, and one `prepare` made is now ours."""
    given = Path(environ[ENV]) if environ.get(ENV) else None
    ours = given is not None and (given / MARKER).exists()
    if ours and reexec:
        (given / MARKER).write_text(str(os.getpid()))
        return given
    if given is not None and not ours:
        if not reexec:
            given.mkdir(parents=True, exist_ok=True)
            for stale in given.glob("*.db"):
                stale.unlink(missing_ok=True)
        return given
    _remove_abandoned(Path(tempfile.gettempdir()))
    path = Path(tempfile.mkdtemp(prefix=PREFIX))
    (path / MARKER).write_text(str(os.getpid()))
    environ[ENV] = str(path)
    return path


def _remove_abandoned(parent: Path) -> None:
    """Delete the directories of masters that died without `remove` (SIGKILL): a few
    64 KiB files per process each, which would otherwise pile up in the temporary directory."""
    for path in parent.glob(PREFIX + "*"):
        try:
            owner = int((path / MARKER).read_text() or 0)
        except (OSError, ValueError):
            continue
        if owner and not _alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def process_exited(pid: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """A worker process ended: its live gauges leave the sums."""
    path = environ.get(ENV)
    if path:
        from prometheus_client import multiprocess  # after `prepare`: see the module's docstring
        multiprocess.mark_process_dead(pid, path)


def remove(environ: MutableMapping[str, str] = os.environ, handing_over: bool = False) -> None:
    """gunicorn stops: delete the directory if `prepare` made it, unless a new master
    (SIGUSR2) goes on using it (`handing_over`)."""
    path = environ.get(ENV)
    if path and not handing_over and (Path(path) / MARKER).exists():
        shutil.rmtree(path, ignore_errors=True)
