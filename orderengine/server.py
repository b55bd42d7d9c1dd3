"""`orderengine serve`: API, WebSocket and worker in one process.

It runs gunicorn in-process (one gthread worker) rather than Werkzeug's
development server, which does not deliver WebSocket close frames; the Huey
consumer and the worker services start inside that web process.
"""
from __future__ import annotations

from gunicorn.app.base import BaseApplication

from orderengine.app import create_app
from orderengine.config import Settings
from orderengine.worker import EmbeddedWorker



class EmbeddedServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        for key, value in {
            "bind": f"{s.host}:{s.port}", "workers": 1, "worker_class": "gthread",
            # a WebSocket holds a thread: MAX_SOCKETS_PER_PROCESS of them, and HTTP keeps WEB_THREADS
            "threads": s.max_sockets_per_process + s.web_threads, "worker_connections": 4096, "graceful_timeout": 15,
            "timeout": 60, "accesslog": None, "loglevel": s.log_level.lower(),
            "control_socket_disable": True, "logger_class": "orderengine.logs.RedactingGunicornLogger",
            "post_worker_init": _start_worker, "worker_exit": _stop_worker,
        }.items():
            self.cfg.set(key, value)

    def load(self):
        return create_app(self.settings)


def _start_worker(worker) -> None:
    embedded = EmbeddedWorker(worker.wsgi.extensions["orderengine"])
    embedded.start()
    worker.wsgi.extensions["orderengine.worker"] = embedded


def _stop_worker(_server, worker) -> None:
    embedded = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get("orderengine.worker")
    if embedded:
        embedded.stop()
