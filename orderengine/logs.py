"""Structured logs: one JSON object per line, with whatever `extra` a call gave.

No secret is written to a log (SPEC §6): URLs are printed through `redact_url`,
and as a last line of defence every line, ours and gunicorn's, goes through
`redact`, which blanks `apiKey=` query values, `Bearer` tokens and the password
of any `scheme://user:password@host` URL.
"""
from __future__ import annotations

import json
import logging
import re
import sys

from orderengine.clock import iso, utcnow

REDACTED = "***"
_SECRETS = [
    # ?apiKey=... / &api_key=... up to the next separator (a query, a JSON string, a log line)
    (re.compile(r"(?i)(\bapi[_-]?key=)[^&\s\"'\\]+"), r"\1" + REDACTED),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"'\\,;]+"), r"\1" + REDACTED),
    # scheme://user:password@host (an empty user too: redis://:password@host)
    # (a password may hold an unencoded "@" or "/": up to the last "@" of the token)
    (re.compile(r"(://[^\s:/@\"'\\]*:)[^\s\"'\\]*@"), r"\1" + REDACTED + "@"),
]


def redact(text: str) -> str:
    """`text` with every secret this module knows how to spot blanked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def brief(exc: BaseException, limit: int) -> str:
    """An exception's text fit for a log line or an error message: secrets blanked first,
    then cut to `limit` (cut first, a password whose closing '@' fell off would show)."""
    return redact(str(exc))[:limit]


def redact_url(url: str | None) -> str | None:
    """A URL fit to print: its password (if any) replaced by ***; the rest as given.

    The password is whatever lies between the user's ':' and the LAST '@' of the URL,
    as SQLAlchemy and redis-py read it: a password may hold an unencoded '/', '@' or
    '?', which urllib would take for the path. An '@' later in the URL (a query value)
    makes more than the password hidden, never less."""
    if not url:
        return url
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return redact(url)
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{REDACTED}@{host}"


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its traceback) with secrets blanked; for handlers
    whose formatter is not ours (gunicorn's error and access logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"at": iso(utcnow()), "level": record.levelname.lower(), "logger": record.name,
                "event": record.getMessage()}
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("huey").setLevel(max(logging.WARNING, logging.getLevelName(level)))


try:  # gunicorn is a dependency of the API, not of every use of this module
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # pragma: no cover
    _GunicornLogger = None

if _GunicornLogger is not None:
    class RedactingGunicornLogger(_GunicornLogger):
        """gunicorn's logger (`logger_class` in gunicorn.conf.py and `orderengine serve`) with
        every line through `redact`: its error log prints a failing request's URI, and an
        access log would print every query string (?apiKey=...)."""

        def setup(self, cfg) -> None:
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                for handler in logger.handlers:
                    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                        handler.addFilter(RedactingFilter())
