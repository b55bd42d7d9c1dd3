"""gunicorn settings for the production API + WebSocket server.

gthread workers: a WebSocket holds one thread for its life (plus a light
reader thread), so WEB_THREADS bounds the sockets one process serves; the
README says how many one process held when measured. Settings come from the
same place as the engine's (environment and .env).
"""
from orderengine.config import load_settings

_settings = load_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "gthread"
threads = _settings.web_threads
worker_connections = 4096
timeout = 60
graceful_timeout = 15
keepalive = 5
accesslog = None
# gunicorn's control socket defaults to one path per user, shared by every gunicorn on the host
control_socket_disable = True
