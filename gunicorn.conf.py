"""gunicorn settings for the production API + WebSocket server.

gevent workers: a WebSocket or a request is a greenlet, not a thread, so one
process holds thousands of sockets and still answers HTTP at once, and a burst
of events reaches 1,000 sockets in tens of milliseconds where 2,000 gthread
threads took hundreds (bench/README.md). WEB_THREADS bounds the connections one
process serves at once. psycopg 3 and redis-py cooperate with gevent's patched
sockets by themselves. Settings come from the same place as the engine's
(environment and .env).

A process holds at most MAX_SOCKETS_PER_PROCESS WebSockets (one more is refused
at once with close 1013: orderengine/socketslots.py), and accepts
MAX_SOCKETS_PER_PROCESS + WEB_THREADS connections, so with every socket slot
taken HTTP still has WEB_THREADS connections of its own and never waits in the
listen queue behind sockets. Every line gunicorn logs goes through the
engine's redaction (no `?apiKey=` or password in a log); there is no access log.
"""
import sys

from orderengine import metrics_files

from orderengine.config import ConfigError, is_loopback, load_settings

try:
    _settings = load_settings()
    _settings.auth_mode  # HOST reachable from other machines and AUTH unset: refuse to start
except ConfigError as exc:
    sys.exit(f"orderengine: {exc}")

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "gevent"
worker_connections = _settings.max_sockets_per_process + _settings.web_threads
logger_class = "orderengine.logs.RedactingGunicornLogger"
timeout = 60
graceful_timeout = 15
keepalive = 5
accesslog = None
# gunicorn's control socket defaults to one path per user, shared by every gunicorn on the host
control_socket_disable = True

# Metrics: every worker process writes its figures to files in one directory and /metrics sums
# them (prometheus-client's multiprocess mode, orderengine/metrics_files.py). The directory is set
# before the workers fork; so no preload_app, which would load the app (and the library) first.


def on_starting(server):
    _refuse_open_binds(server.cfg.bind)
    metrics_files.prepare(reexec=bool(server.master_pid))


def _refuse_open_binds(binds):
    """`-b 0.0.0.0:3000` on the command line overrides HOST: the AUTH rule applies to the
    addresses gunicorn really binds (a unix socket or an inherited fd is local)."""
    if _settings.auth is not None:
        return
    for address in binds:
        if address.startswith(("unix:", "fd://")):
            continue
        host = address.rsplit(":", 1)[0] if ":" in address else address
        if not is_loopback(host):
            sys.exit(f"orderengine: AUTH must be set when binding {address} (not a loopback address): "
                     "AUTH=keys to require API keys, or AUTH=off to let anyone who can reach the port use the API")


def child_exit(server, worker):
    metrics_files.process_exited(worker.pid)


def on_exit(server):
    metrics_files.remove(handing_over=bool(server.reexec_pid))
