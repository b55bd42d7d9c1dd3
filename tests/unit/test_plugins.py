"""Venue discovery through entry points, with plugins installed into a folder on sys.path."""
import sys
import textwrap

import pytest

from orderengine.config import ConfigError
from orderengine.plugins import load_venues
from tests.conftest import make_settings


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path to install plugin distributions into."""
    monkeypatch.syspath_prepend(str(tmp_path))
    added = []

    def install(dist: str, module: str, source: str, entry_points: dict[str, str]) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[orderengine.venues]\n{lines}\n")
        added.append(module)

    yield install
    for module in added:
        sys.modules.pop(module, None)


GOOD = """
    from orderengine.venue import Venue
    class Good(Venue):
        name = "goodvenue"
        def pools(self): return []
        def quote(self, *a): raise NotImplementedError
        def execute(self, *a): raise NotImplementedError
        def status(self, *a): raise NotImplementedError
        def lookup(self, *a): raise NotImplementedError
    def create(env): return Good()
"""


def test_an_installed_plugin_is_found_by_its_entry_point(site, sqlite_url):
    site("goodvenue", "goodvenue_mod", GOOD, {"goodvenue": "goodvenue_mod:create"})
    registry = load_venues(make_settings(database_url=sqlite_url))
    assert {"raydium", "meteora", "goodvenue"} <= set(registry.venues)


def test_a_plugin_that_fails_to_import_is_reported_and_left_out(site, sqlite_url):
    site("brokenvenue", "brokenvenue_mod", "raise RuntimeError('no such SDK')\n",
         {"brokenvenue": "brokenvenue_mod:create"})
    registry = load_venues(make_settings(database_url=sqlite_url))
    assert "brokenvenue" not in registry.venues
    assert "no such SDK" in registry.failures["brokenvenue"]
    assert {"raydium", "meteora"} <= set(registry.venues)


def test_a_plugin_whose_factory_raises_is_reported_and_left_out(site, sqlite_url):
    site("badfactory", "badfactory_mod", "def create(env):\n    raise ValueError('missing API key')\n",
         {"badfactory": "badfactory_mod:create"})
    registry = load_venues(make_settings(database_url=sqlite_url))
    assert "missing API key" in registry.failures["badfactory"]


def test_two_venues_with_one_name_stop_startup(site, sqlite_url):
    site("goodvenue", "goodvenue_mod", GOOD, {"raydium": "goodvenue_mod:create"})
    with pytest.raises(ConfigError, match="two venue plugins are named 'raydium'"):
        load_venues(make_settings(database_url=sqlite_url))


def test_venues_selects_which_plugins_are_used(sqlite_url):
    registry = load_venues(make_settings(database_url=sqlite_url, venues=("raydium",)))
    assert set(registry.venues) == {"raydium"}


def test_venues_naming_an_uninstalled_plugin_stops_startup(sqlite_url):
    with pytest.raises(ConfigError, match="not installed: jupiter"):
        load_venues(make_settings(database_url=sqlite_url, venues=("raydium", "jupiter")))
