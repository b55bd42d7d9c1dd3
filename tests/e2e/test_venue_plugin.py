"""A third party's venue, pip-installed beside orderengine, used with no change to orderengine."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest

from tests.e2e.harness import ORDERENGINE, REPO, clean_environ, free_port

pytestmark = pytest.mark.e2e

BROKEN_SETUP = """
[metadata]
name = orderengine-broken-venue
version = 0.1.0
[options]
py_modules = broken_venue
[options.entry_points]
orderengine.venues =
    brokenvenue = broken_venue:create
"""


def pip_install(target, source) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(source)], check=True, timeout=600, capture_output=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with the example plugin and a plugin that raises on import, both pip-installed."""
    target = tmp_path_factory.mktemp("site")
    pip_install(target, REPO / "examples" / "venue-plugin")
    broken = tmp_path_factory.mktemp("broken")
    (broken / "setup.cfg").write_text(textwrap.dedent(BROKEN_SETUP))
    (broken / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=64", "wheel"]\n'
                                           'build-backend = "setuptools.build_meta"\n')
    (broken / "broken_venue.py").write_text("raise ImportError('this venue needs an SDK that is not installed')\n")
    pip_install(target, broken)
    return target


@pytest.fixture
def engine(harness, site, tmp_path):
    env = clean_environ(PORT=free_port(), DATABASE_URL=f"sqlite:///{tmp_path}/engine.db", PYTHONPATH=str(site))
    return harness.serve(env), env


def test_the_plugin_is_listed_by_the_cli(harness, site, tmp_path):
    env = clean_environ(DATABASE_URL=f"sqlite:///{tmp_path}/cli.db", PYTHONPATH=str(site))
    out = subprocess.run([ORDERENGINE, "venues"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "stableswap" in out.stdout and "USDC/USDT" in out.stdout
    assert "brokenvenue  FAILED TO LOAD" in out.stdout


def test_the_plugin_appears_in_the_api_and_the_broken_one_is_reported(engine):
    server, _ = engine
    venues = {v["name"]: v for v in server.get("/api/venues").json()["venues"]}
    assert venues["stableswap"]["status"] == "loaded"
    assert venues["stableswap"]["pools"][0]["tokens"] == ["USDC", "USDT"]
    assert venues["brokenvenue"]["status"] == "failed"
    assert "SDK that is not installed" in venues["brokenvenue"]["error"]
    health = server.get("/health")
    assert health.status_code == 200  # the engine runs on with the other venues
    assert "brokenvenue" in health.json()["checks"]["venues"]["failed"]


def building(server, order_id):
    return next(e for e in server.events(order_id) if e["status"] == "building")["data"]


def test_the_plugin_wins_and_fills_a_large_stablecoin_order(engine):
    server, _ = engine
    order_id = server.post_order(tokenIn="USDC", tokenOut="USDT", amountIn="5000000")
    server.wait_for_status([order_id], {"confirmed", "failed"}, timeout=60)
    decision = building(server, order_id)
    quoted = {q["venue"]: q for q in decision["quotes"]}
    assert set(quoted) == {"raydium", "meteora", "stableswap"}
    assert decision["venue"] == "stableswap"
    assert Decimal(quoted["stableswap"]["netOut"]) == max(Decimal(q["netOut"]) for q in quoted.values())
    snapshot = server.order(order_id)
    assert snapshot["status"] == "confirmed" and snapshot["venue"] == "stableswap"


def test_an_order_the_plugin_cannot_route_goes_to_the_built_in_venues(engine):
    server, _ = engine
    order_id = server.post_order(tokenIn="SOL", tokenOut="USDC", amountIn="1")
    server.wait_for_status([order_id], {"confirmed"}, timeout=60)
    stable = next(q for q in building(server, order_id)["quotes"] if q["venue"] == "stableswap")
    assert stable["error"]["code"] == "NO_ROUTE"
    assert server.order(order_id)["venue"] in {"raydium", "meteora"}
