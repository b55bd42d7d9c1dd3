"""Every error leaves as JSON in one shape: {"error": {"code", "message", ...}}.

Client mistakes keep their 4xx; a database or Redis that is away becomes 503;
anything else is logged with its stack trace and answered as a plain 500
without one.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from orderengine.errors import EngineError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE", 414: "URI_TOO_LONG", 415: "UNSUPPORTED_MEDIA_TYPE",
    431: "HEADERS_TOO_LARGE",
}


def error_response(code: str, message: str, status: int, **extra):
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(EngineError)
    def _engine_error(exc: EngineError):
        response = jsonify({"error": exc.to_dict()})
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:  # 429 RATE_LIMITED, 503 OVERLOADED
            response.headers["Retry-After"] = str(retry_after)
        return response, exc.http_status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = {404: "No such resource.", 405: "This method is not allowed here.",
                   413: "The request body is over 64 KiB."}.get(status, exc.description)
        response, status = error_response(HTTP_CODES.get(status, "HTTP_ERROR"), message, status)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # e.g. Allow on a 405
                response.headers[name] = value
        return response, status

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)
    def _database_down(exc: Exception):
        # the driver's first line only: never the statement or its parameters (db.py hides
        # them too), and the log filter redacts any URL credentials that slip through
        log.error("database unavailable", extra={"error": _first_line(exc)})
        return error_response("SERVICE_UNAVAILABLE", "The database is not available.", 503)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if _is_redis_error(exc):
            log.error("redis unavailable", extra={"error": _first_line(exc)})
            return error_response("SERVICE_UNAVAILABLE", "Redis is not available.", 503)
        log.exception("unhandled error")
        return error_response("INTERNAL_ERROR", "Something went wrong on our side.", 500)


def _is_redis_error(exc: Exception) -> bool:
    try:
        import redis
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, redis.RedisError)


def _first_line(exc: Exception) -> str:
    """`Class: first line of the message`, for a log line about a dependency that failed."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    return f"{type(orig).__name__}: {str(orig).splitlines()[0][:200] if str(orig) else ''}"
