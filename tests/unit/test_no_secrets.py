"""No secret in a log line, a response or an error (SPEC §6): passwords in URLs, API keys."""
import json
import logging

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from orderengine.config import ConfigError, settings_from
from orderengine.db import create_db_engine
from orderengine.logs import JsonFormatter, RedactingFilter, redact, redact_url

PASSWORD = "S3cretPw-7f1c"
TOKEN = "tok_live_9d2e4b"


@pytest.mark.parametrize("text, hidden", [
    (f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/db", PASSWORD),
    (f"redis://:{PASSWORD}@127.0.0.1:6379/0", PASSWORD),
    (f"rediss://default:{PASSWORD}@cache.example.com/2", PASSWORD),
    (f"postgresql://u:{PASSWORD}@with@at@host/db", PASSWORD),
    (f"postgresql+psycopg://u:pa/{PASSWORD}/ss@host/db", PASSWORD),   # a '/' in a password
    (f"GET /api/orders/stream?apiKey={TOKEN}&x=1 HTTP/1.1", TOKEN),
    (f"/api/orders/execute?orderId=1&api_key={TOKEN}", TOKEN),
    (f"Authorization: Bearer {TOKEN}", TOKEN),
    (f'{{"headers": {{"authorization": "bearer {TOKEN}"}}}}', TOKEN),
])
def test_redact_blanks_every_kind_of_secret(text, hidden):
    assert hidden not in redact(text)
    assert "***" in redact(text)


def test_redact_leaves_ordinary_text_alone():
    for text in ("sqlite:///var/orderengine.db", "redis://127.0.0.1:6379/0", "at 10:00:01 user@example.com",
                 "http://host:80/path", '{"orderId": "abc", "status": "pending"}'):
        assert redact(text) == text


def test_redact_url_keeps_everything_but_the_password():
    assert redact_url(f"postgresql+psycopg://postgres:{PASSWORD}@db.internal:5432/orders") == \
        "postgresql+psycopg://postgres:***@db.internal:5432/orders"
    assert redact_url(f"redis://:{PASSWORD}@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("sqlite:///var/orderengine.db") == "sqlite:///var/orderengine.db"
    assert redact_url(None) is None


@pytest.mark.parametrize("password", [f"pa/{PASSWORD}", f"{PASSWORD}?x", f"p@{PASSWORD}/"])
def test_redact_url_hides_a_password_holding_url_punctuation(password):
    """SQLAlchemy and redis-py take the password up to the last '@': so do we."""
    assert redact_url(f"postgresql+psycopg://u:{password}@host:5432/db") == "postgresql+psycopg://u:***@host:5432/db"


def test_a_json_log_line_is_redacted_whatever_field_the_secret_is_in():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "connecting to %s", (f"redis://:{PASSWORD}@h",),
                               None)
    record.url = f"postgresql://u:{PASSWORD}@h/db"
    record.header = f"Bearer {TOKEN}"
    line = JsonFormatter().format(record)
    assert PASSWORD not in line and TOKEN not in line
    assert json.loads(line)["url"] == "postgresql://u:***@h/db"


def test_the_filter_redacts_message_and_traceback_for_foreign_formatters():
    try:
        raise RuntimeError(f"cannot open ws://x/api/orders/stream?apiKey={TOKEN}")
    except RuntimeError:
        import sys
        record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s",
                                   (f"/api/orders/stream?apiKey={TOKEN}",), sys.exc_info())
    RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert TOKEN not in text and "apiKey=***" in text and "RuntimeError" in text


def test_gunicorns_error_and_access_logs_are_redacted(tmp_path):
    from gunicorn.config import Config

    from orderengine.logs import RedactingGunicornLogger

    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "error.log"))
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("loglevel", "debug")
    logger = RedactingGunicornLogger(cfg)
    logger.error("Error handling request %s", f"/api/orders/stream?apiKey={TOKEN}")
    logger.access_log.info("GET /api/orders/stream?apiKey=%s 101 Authorization: Bearer %s", TOKEN, TOKEN)
    for handler in logger.error_log.handlers + logger.access_log.handlers:
        handler.flush()
    text = (tmp_path / "error.log").read_text() + (tmp_path / "access.log").read_text()
    assert "apiKey=***" in text and TOKEN not in text


def test_a_bad_url_in_the_configuration_is_quoted_without_its_password():
    with pytest.raises(ConfigError) as bad:
        settings_from({"DATABASE_URL": f"mysql://root:{PASSWORD}@db/orders",
                       "REDIS_URL": f"memcached://:{PASSWORD}@cache"})
    assert PASSWORD not in str(bad.value) and "mysql://root:***@db/orders" in str(bad.value)


def test_serve_prints_the_database_url_without_its_password(monkeypatch):
    import orderengine.migrate
    import orderengine.server
    from orderengine.cli import main

    monkeypatch.setattr(orderengine.migrate, "upgrade", lambda url: None)
    monkeypatch.setattr(orderengine.server, "EmbeddedServer",
                        lambda settings: type("NotServing", (), {"run": lambda self: None})())
    monkeypatch.setattr("orderengine.cli.configure_logging", lambda level: None)  # keep pytest's handlers
    result = CliRunner().invoke(main, ["serve"], env={
        "DATABASE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/orders", "LOG_LEVEL": "DEBUG"})
    assert result.exit_code == 0, result.output
    assert "postgres:***@127.0.0.1" in result.output and PASSWORD not in result.output


def test_a_database_error_carries_no_statement_parameters(sqlite_url):
    engine = create_db_engine(sqlite_url)
    with pytest.raises(sa.exc.OperationalError) as failed:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table WHERE k = :k"), {"k": PASSWORD})
    assert PASSWORD not in str(failed.value)
    engine.dispose()


def test_a_database_error_answers_503_and_logs_no_parameters(client, runtime, monkeypatch, caplog):
    def failing_read(order_id, owner=None):
        with runtime.engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table WHERE k = :k"), {"k": PASSWORD})

    monkeypatch.setattr(runtime.store, "require", failing_read)
    caplog.set_level(logging.DEBUG)
    response = client.get("/api/orders/00000000-0000-4000-8000-000000000000",
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert PASSWORD not in response.get_data(as_text=True)
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "database unavailable" in logged and PASSWORD not in logged and TOKEN not in logged


def test_health_names_the_failing_check_but_not_its_exception(client, runtime, monkeypatch):
    broken = sa.create_engine(f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/orders",
                              connect_args={"connect_timeout": 2})
    monkeypatch.setattr(runtime, "engine", broken)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == {"ok": False}
    body = response.get_data(as_text=True)
    assert PASSWORD not in body and "127.0.0.1" not in body and "Error" not in body


def test_a_venue_error_quoting_a_secret_reaches_no_client(start_engine):
    """A plugin's exception may quote its RPC URL with a key or password: the order's
    events and snapshot (served to clients) carry the error with the secret blanked."""
    from orderengine.intake import submit_order
    from orderengine.schemas import parse_order_request
    from tests.fakes import FakeVenue
    from tests.unit.conftest import SOL_USDC, wait_terminal

    leaky = FakeVenue("leaky", quote_error=ConnectionError(
        f"Max retries exceeded with url: https://u:{PASSWORD}@rpc.example.com/?api-key={TOKEN}"))
    rt = start_engine(leaky, FakeVenue("alpha"))
    order_id = submit_order(rt, parse_order_request(SOL_USDC)).order_id
    assert wait_terminal(rt, order_id).status == "confirmed"
    building = next(e for e in rt.store.events(order_id, 0) if e.status == "building")
    (error,) = [q for q in building.data["quotes"] if q["venue"] == "leaky"]
    served = json.dumps([e.to_dict() for e in rt.store.events(order_id, 0)])
    assert "Max retries exceeded" in error["error"]["message"]
    assert PASSWORD not in served and TOKEN not in served


def test_an_order_error_never_carries_a_secret():
    from orderengine.errors import StepFailed

    error = StepFailed(f"send: ConnectionError: https://rpc.example.com/?apiKey={TOKEN}")
    assert TOKEN not in error.message and TOKEN not in json.dumps(error.to_dict())


def test_a_long_exception_text_is_redacted_before_it_is_cut():
    """Cut first, a URL whose closing '@' fell beyond the cut would show its password's start."""
    from orderengine.logs import brief

    exc = RuntimeError("RPC failed: " + "x" * 260 + f" https://rpcuser:{PASSWORD}@rpc.example.com/")
    for limit in (280, 285, 290, 300):
        assert PASSWORD[:4] not in brief(exc, limit)
