"""The app factory: `create_app(config=None)` builds the Flask app from Settings.

Nothing happens at import time. The process's Runtime (store, bus, queue,
venues) hangs on `app.extensions["orderengine"]`; tests build apps with their
own settings and a throwaway database.
"""
from __future__ import annotations

from flask import Flask

from orderengine import auth, dashboard
from orderengine.api import docs, metrics, orders, system
from orderengine.api.errors import register_error_handlers
from orderengine.api.orders import MAX_BODY_BYTES
from orderengine.api.sockets import sock
from orderengine.config import Settings, load_settings
from orderengine.runtime import Runtime

WS_PING_INTERVAL_S = 20


def create_app(config: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    settings = config or load_settings()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False,
                      SOCK_SERVER_OPTIONS={"ping_interval": WS_PING_INTERVAL_S,
                                           "max_message_size": MAX_BODY_BYTES})
    app.json.sort_keys = False
    settings.auth_mode  # AUTH unset on a HOST other machines reach: stop here, saying so (ConfigError)
    app.extensions["orderengine"] = runtime = runtime or Runtime(settings)
    register_error_handlers(app)
    auth.init_app(app, runtime)  # first: later before_request hooks (rate limits) read g.caller
    app.register_blueprint(orders.bp)
    app.register_blueprint(system.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(metrics.bp)
    sock.init_app(app)
    return app
