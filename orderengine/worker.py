"""Running the worker: Huey's consumer threads plus our worker services.

`run_worker` is `orderengine worker`: it blocks, SIGTERM and SIGINT stop it
gracefully (running steps finish, held orders are handed back).
`EmbeddedWorker` is the same inside `orderengine serve`'s web process, where
the web server owns the signals.
"""
from __future__ import annotations

import logging

from huey.consumer import Consumer

from orderengine.metrics import serve_worker_metrics
from orderengine.runtime import Runtime

log = logging.getLogger(__name__)

CONSUMER_THREADS = 2  # the queue carries only wake-ups; the steps run on the pump's threads
SHUTDOWN_TIMEOUT_S = 10  # within gunicorn's graceful_timeout (15 s), so serve hands back too


def consumer_options(runtime: Runtime) -> dict:
    return dict(workers=CONSUMER_THREADS, worker_type="thread", periodic=False,
                initial_delay=0.05, backoff=1.15, max_delay=0.5, check_worker_health=True,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S)


def run_worker(runtime: Runtime) -> None:
    consumer = Consumer(runtime.huey, graceful_signal="TERM", **consumer_options(runtime))
    exporter = serve_worker_metrics(runtime.settings)  # METRICS_PORT; raises if it cannot listen
    runtime.start_worker()
    try:
        consumer.run()
    finally:
        runtime.close()
        if exporter is not None:
            exporter.shutdown()


class _QuietConsumer(Consumer):
    """A consumer that leaves signal handling to its host process."""

    def _set_signal_handlers(self) -> None:
        pass


class EmbeddedWorker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.consumer = _QuietConsumer(runtime.huey, **consumer_options(runtime))

    def start(self) -> None:
        self.runtime.start_worker()
        self.consumer.start()

    def stop(self) -> None:
        self.consumer.stop(graceful=True)
        self.runtime.close()
