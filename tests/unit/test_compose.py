"""docker-compose.yml and its Dockerfile run the project's real commands with settings it accepts.

No Docker here: the file is read as YAML (anchors and `<<` merges resolved as Compose does)
and checked against the code it starts.
"""
from __future__ import annotations

import ast
import configparser
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from orderengine.config import VARIABLES, settings_from

REPO = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "api", "worker")
COMMANDS = {
    "migrate": ["orderengine", "migrate"],
    "api": ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"],
    "worker": ["orderengine", "worker"],
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def test_compose_defines_postgres_redis_migrate_api_worker_and_prometheus(services):
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker", "prometheus"}
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["redis"]["image"].split(":")[0] == "redis"
    assert services["redis"]["image"].split(":")[1].startswith("7")
    assert services["postgres"].get("healthcheck", {}).get("test")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_run_the_projects_own_commands(services, name):
    assert command(services[name]) == COMMANDS[name]


def test_orderengine_console_script_has_the_migrate_worker_and_serve_commands():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    scripts = dict(line.split("=", 1) for line in
                   setup["options.entry_points"]["console_scripts"].strip().splitlines())
    assert {k.strip(): v.strip() for k, v in scripts.items()}["orderengine"] == "orderengine.cli:main"

    from orderengine.cli import main
    assert {"migrate", "worker", "serve"} <= set(main.commands)


def test_gunicorn_command_names_an_app_that_wsgi_py_defines_and_a_config_that_exists():
    module, _, attribute = COMMANDS["api"][1].partition(":")
    tree = ast.parse((REPO / f"{module}.py").read_text())
    assigned = {target.id for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    assert attribute in assigned
    assert (REPO / COMMANDS["api"][3]).is_file()


def test_app_services_share_one_database_and_one_redis(services):
    envs = {name: environment(services[name]) for name in APP_SERVICES}
    assert len({env["DATABASE_URL"] for env in envs.values()}) == 1
    assert len({env["REDIS_URL"] for env in envs.values()}) == 1
    database, redis = urlsplit(envs["api"]["DATABASE_URL"]), urlsplit(envs["api"]["REDIS_URL"])
    assert database.scheme.startswith("postgres") and database.hostname == "postgres"
    assert redis.scheme == "redis" and redis.hostname == "redis"


def test_database_url_carries_the_credentials_postgres_is_started_with(services):
    url = urlsplit(environment(services["api"])["DATABASE_URL"])
    pg = environment(services["postgres"])
    assert url.username == pg["POSTGRES_USER"]
    assert url.path.lstrip("/") == pg.get("POSTGRES_DB", pg["POSTGRES_USER"])
    if pg.get("POSTGRES_HOST_AUTH_METHOD") != "trust":
        assert url.password == pg["POSTGRES_PASSWORD"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_set_only_variables_orderengine_knows_and_values_it_accepts(services, name):
    env = environment(services[name])
    assert set(env) <= set(VARIABLES), set(env) - set(VARIABLES)
    settings = settings_from(env)  # raises ConfigError on a value the engine would refuse
    assert not settings.embedded


def test_every_variable_orderengine_knows_is_listed_in_env_example():
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    assert set(VARIABLES) <= listed, set(VARIABLES) - listed


def test_api_listens_on_all_interfaces_on_the_published_port(services):
    api = services["api"]
    env = environment(api)
    assert env["HOST"] == "0.0.0.0"
    published = {str(p).rsplit(":", 1)[-1] for p in api["ports"]}
    assert env["PORT"] in published


def test_the_api_on_every_interface_requires_api_keys(services):
    settings = settings_from(environment(services["api"]))
    assert settings.host == "0.0.0.0" and settings.auth_mode == "keys"


def test_orderengine_has_the_keys_commands_the_compose_file_tells_users_to_run(compose):
    from orderengine.cli import main
    assert {"create", "list", "revoke"} <= set(main.commands["keys"].commands)
    assert "docker compose run --rm api orderengine keys create NAME" in (REPO / "docker-compose.yml").read_text()


def test_migrate_waits_for_postgres_and_api_and_worker_wait_for_the_migration_and_redis(services):
    assert depends_on(services["migrate"]) == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        deps = depends_on(services[name])
        assert deps["migrate"] == "service_completed_successfully"
        assert "redis" in deps
    assert services["migrate"].get("restart", "no") == "no"


def test_app_services_run_one_image_built_from_the_dockerfile_without_dev_tools(services):
    builds = {name: services[name].get("build") for name in APP_SERVICES}
    images = {services[name].get("image") for name in APP_SERVICES}
    assert set(map(str, builds.values())) == {"."} and len(images) == 1
    instructions = dockerfile_instructions()
    assert instructions[0] == "FROM python:3.11-slim"
    installs = [part.strip() for line in instructions if line.startswith("RUN ")
                for part in line[4:].split("&&") if "pip install" in part]
    assert installs and not any("dev" in part for part in installs), installs


def prometheus_config(service: dict) -> tuple[dict, str]:
    """The Prometheus config the service mounts (parsed), and its path in the repository."""
    mounts = dict(str(volume).rsplit(":", 2)[:2] for volume in service["volumes"])
    source = {target: source for source, target in mounts.items()}["/etc/prometheus/prometheus.yml"]
    return yaml.safe_load((REPO / source).read_text()), source


def scrape_targets(config: dict) -> dict[str, tuple[int, str]]:
    """service name -> (port, metrics path) of every DNS-discovered scrape target."""
    targets = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                targets[name] = (int(sd["port"]), job.get("metrics_path", "/metrics"))
    return targets


def test_prometheus_scrapes_the_api_on_its_port_and_every_worker_on_its_metrics_port(services):
    config, source = prometheus_config(services["prometheus"])
    assert services["prometheus"]["image"].split(":")[0] == "prom/prometheus"
    assert source.startswith("./deploy/")
    api, worker = (settings_from(environment(services[name])) for name in ("api", "worker"))
    assert worker.metrics_port is not None and worker.host == "0.0.0.0"
    assert scrape_targets(config) == {"api": (api.port, "/metrics"), "worker": (worker.metrics_port, "/metrics")}
    for sd in (sd for job in config["scrape_configs"] for sd in job["dns_sd_configs"]):
        assert sd["type"] == "A"  # one record per container: `--scale worker=3` is three targets
    assert {"api", "worker"} <= set(depends_on(services["prometheus"]))


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined."""
    text = "\n".join(line for line in (REPO / "Dockerfile").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    return [" ".join(line.split()) for line in text.replace("\\\n", " ").splitlines() if line.strip()]
