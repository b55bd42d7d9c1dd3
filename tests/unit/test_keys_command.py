"""`orderengine keys create|list|revoke`, and start-up refusing an open HOST without AUTH."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orderengine.app import create_app
from orderengine.cli import main
from orderengine.config import ConfigError, settings_from
from orderengine.keys import ApiKeys
from orderengine.db import create_db_engine
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys_cli(tmp_path, monkeypatch):
    """Runs `orderengine keys ...` on a SQLite file of this test's own."""
    monkeypatch.chdir(tmp_path)  # no developer's .env
    db = tmp_path / "keys.db"
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, ["keys", *args], env={"DATABASE_URL": f"sqlite:///{db}"})
    run.db = db
    return run


def created_key(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[-1]


def test_create_prints_the_key_once_alone_on_the_last_line_and_stores_only_its_hash(keys_cli):
    result = keys_cli("create", "alice")
    key = created_key(result)
    assert key.startswith("oe_") and len(key) >= 40 and key.strip() == key
    assert (result.stdout + result.stderr).count(key) == 1
    secret = key[len("oe_"):]
    for path in keys_cli.db.parent.glob("keys.db*"):  # the database and its WAL
        assert secret.encode() not in path.read_bytes(), path
    engine = create_db_engine(f"sqlite:///{keys_cli.db}")
    try:
        assert ApiKeys(engine).name_of(key) == "alice"
    finally:
        engine.dispose()


def test_every_key_is_new(keys_cli):
    assert created_key(keys_cli("create", "a")) != created_key(keys_cli("create", "b"))


def test_list_shows_names_creation_and_revocation_but_never_a_key(keys_cli):
    alice, bob = created_key(keys_cli("create", "alice")), created_key(keys_cli("create", "bob"))
    assert keys_cli("revoke", "bob").exit_code == 0
    listed = keys_cli("list")
    assert listed.exit_code == 0
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {"alice", "bob"}
    assert "active" in lines["alice"] and "revoked" in lines["bob"]
    assert lines["alice"].split()[1].endswith("Z")  # its creation time
    assert alice[3:] not in listed.output and bob[3:] not in listed.output


def test_revoke_makes_the_key_fail_and_says_so(keys_cli):
    key = created_key(keys_cli("create", "alice"))
    result = keys_cli("revoke", "alice")
    assert result.exit_code == 0 and "revoked" in result.stderr
    engine = create_db_engine(f"sqlite:///{keys_cli.db}")
    try:
        assert ApiKeys(engine).name_of(key) is None
    finally:
        engine.dispose()
    assert keys_cli("revoke", "alice").exit_code == 0  # again: nothing changes


def test_revoking_an_unknown_name_fails(keys_cli):
    result = keys_cli("revoke", "nobody")
    assert result.exit_code == 1 and "nobody" in result.stderr


def test_a_name_is_never_given_twice_even_after_revoking(keys_cli):
    created_key(keys_cli("create", "alice"))
    keys_cli("revoke", "alice")
    result = keys_cli("create", "alice")
    assert result.exit_code == 1 and "exists" in result.stderr and not result.stdout


@pytest.mark.parametrize("name", ["", "-dash-first", "has space", "x" * 65, "ünicode"])
def test_a_bad_name_is_a_usage_error(keys_cli, name):
    result = keys_cli("create", name)
    assert result.exit_code == 2 and not result.stdout


# --- AUTH at start-up -------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"])
def test_auth_is_off_by_default_on_a_loopback_host(host):
    assert settings_from({"HOST": host}).auth_mode == "off"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "api.example.com", ""])
def test_an_open_host_without_auth_stops_start_up_naming_auth(host, sqlite_url):
    settings = make_settings(database_url=sqlite_url, host=host)
    with pytest.raises(ConfigError, match="AUTH must be set"):
        create_app(settings)
    assert make_settings(host=host, auth="keys").auth_mode == "keys"
    assert make_settings(host=host, auth="off").auth_mode == "off"


def test_serve_on_an_open_host_without_auth_stops_before_it_touches_the_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "serve.db"
    result = CliRunner().invoke(main, ["serve"], env={"HOST": "0.0.0.0", "DATABASE_URL": f"sqlite:///{db}"})
    assert result.exit_code == 2 and "AUTH" in result.stderr
    assert not db.exists()


def test_gunicorn_on_an_open_host_without_auth_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"AUTH", "PYTHONPATH"}}
    env.update(HOST="0.0.0.0", PORT="1", DATABASE_URL=f"sqlite:///{tmp_path}/g.db")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    done = subprocess.run([str(gunicorn), "wsgi:app", "-c", str(REPO / "gunicorn.conf.py"),
                           "--pythonpath", str(REPO)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "AUTH must be set" in done.stderr
    assert "Listening at" not in done.stderr  # refused before it bound the port, by its config


def test_gunicorn_bound_to_an_open_address_on_its_command_line_refuses_without_auth(tmp_path):
    """`-b 0.0.0.0:PORT` overrides HOST: the rule follows the address really bound."""
    env = {k: v for k, v in os.environ.items() if k not in {"AUTH", "HOST", "PYTHONPATH"}}
    env.update(PORT="1", DATABASE_URL=f"sqlite:///{tmp_path}/g.db")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    done = subprocess.run([str(gunicorn), "wsgi:app", "-c", str(REPO / "gunicorn.conf.py"),
                           "--pythonpath", str(REPO), "-b", "0.0.0.0:1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "AUTH must be set when binding 0.0.0.0:1" in done.stderr
    assert "Listening at" not in done.stderr
