"""gunicorn settings for the production API + WebSocket server.

gevent workers: a WebSocket or a request is a greenlet, not a thread, so one
process holds thousands of sockets and still answers HTTP at once, and a burst
of events reaches 1,000 sockets in tens of milliseconds where 2,000 gthread
threads took hundreds (bench/README.md). WEB_THREADS bounds the connections one
process serves at once. psycopg 3 and redis-py cooperate with gevent's patched
sockets by themselves. Settings come from the same place as the engine's
(environment and .env).
"""
import sys

from orderengine.config import ConfigError, load_settings

try:
    _settings = load_settings()
    _settings.auth_mode  # HOST reachable from other machines and AUTH unset: refuse to start
except ConfigError as exc:
    sys.exit(f"orderengine: {exc}")

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "gevent"
worker_connections = _settings.web_threads
timeout = 60
graceful_timeout = 15
keepalive = 5
accesslog = None
# gunicorn's control socket defaults to one path per user, shared by every gunicorn on the host
control_socket_disable = True
