"""For Huey's own runner: `huey_consumer huey_consumer.huey -w 2 -k thread`.

The queue carries only wake-ups, so two consumer threads are plenty; the steps
run on the worker's own threads (WORKER_CONCURRENCY), started with the consumer.
`orderengine worker` does the same with our defaults (graceful SIGTERM,
hand-back on stop); use this one where you already run Huey consumers.
"""
import atexit

from orderengine.config import load_settings
from orderengine.logs import configure_logging
from orderengine.metrics import serve_worker_metrics
from orderengine.runtime import Runtime

settings = load_settings()
configure_logging(settings.log_level)
runtime = Runtime(settings)
huey = runtime.huey


_exporter = serve_worker_metrics(settings)  # METRICS_PORT, as `orderengine worker` serves it


@huey.on_startup()
def _start_worker_services() -> None:
    runtime.start_worker()  # once per process: start_worker is idempotent


atexit.register(runtime.close)
if _exporter is not None:
    atexit.register(_exporter.shutdown)
