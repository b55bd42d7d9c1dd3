import pytest

from orderengine.config import DEFAULT_DATABASE_URL, VARIABLES, ConfigError, load_settings, settings_from


def test_no_environment_means_the_embedded_default():
    s = settings_from({})
    assert s.port == 3000 and s.database_url == DEFAULT_DATABASE_URL and s.embedded
    assert (s.mock_quote_latency_ms, s.mock_exec_latency_ms, s.max_attempts, s.retry_backoff_ms,
            s.worker_concurrency, s.max_orders_per_minute) == (200, 2500, 3, 500, 10, None)


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_plain_postgres_urls_are_run_with_psycopg_3(url):
    assert settings_from({"DATABASE_URL": url}).database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("name,value,says", [
    ("PORT", "abc", "PORT must be an integer"),
    ("PORT", "70000", "PORT must be <= 65535"),
    ("MOCK_FAIL_RATE", "1.5", "MOCK_FAIL_RATE must be between 0 and 1"),
    ("MAX_ATTEMPTS", "0", "MAX_ATTEMPTS must be >= 1"),
    ("DATABASE_URL", "mysql://x", "DATABASE_URL must be a sqlite:/// or postgresql:// URL"),
    ("REDIS_URL", "http://x", "REDIS_URL must be a redis:// URL"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be"),
])
def test_a_bad_value_stops_startup_naming_the_variable(name, value, says):
    with pytest.raises(ConfigError, match=says):
        settings_from({name: value})


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        settings_from({"PORT": "x", "MAX_ATTEMPTS": "0"})
    assert "PORT" in str(err.value) and "MAX_ATTEMPTS" in str(err.value)


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nMAX_ATTEMPTS=5\n")
    s = load_settings({"PORT": "4001"}, dotenv_path=env_file)
    assert s.port == 4001 and s.max_attempts == 5


def test_an_empty_redis_url_means_in_process():
    assert settings_from({"REDIS_URL": ""}).embedded


def test_env_example_lists_every_variable():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    listed = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
    assert listed == set(VARIABLES)
