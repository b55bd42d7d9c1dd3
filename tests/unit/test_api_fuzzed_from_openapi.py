"""Schemathesis reads /openapi.json and throws generated requests, valid and invalid, at every
operation of the app in-process (WSGI, SQLite, the real venue plugins, no worker running): no
answer may be a 5xx. Bounded and derandomized, so it is the same run every time.

The app is built when the module is imported: schemathesis' pytest integration needs the
schema at collection time (its fixture-based loader, `from_fixture`, fails on pytest 9, which
no longer has `Node._nodeid`).
"""
from __future__ import annotations

import atexit
import tempfile

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from orderengine.app import create_app
from orderengine.migrate import upgrade
from orderengine.runtime import Runtime
from tests.conftest import make_settings

MAX_EXAMPLES = 200


def _app():
    """The engine on a SQLite file of its own, with the real venue plugins; closed at exit."""
    folder = tempfile.TemporaryDirectory(prefix="orderengine-fuzz-")
    database_url = f"sqlite:///{folder.name}/orderengine.db"
    upgrade(database_url)
    runtime = Runtime(make_settings(database_url=database_url))
    atexit.register(folder.cleanup)
    atexit.register(runtime.close)
    return create_app(runtime.settings, runtime=runtime)


schema = schemathesis.openapi.from_wsgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error])
