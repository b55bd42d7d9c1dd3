# orderengine: `make run` serves the engine, `make test` runs the tests.
# Both create .venv and install the project first, on a machine with only Python 3.11+.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-unit test-integration test-e2e migrate worker api venues bench clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "orderengine needs Python 3.11+, $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install                  ## API + WebSocket + worker in one process, on the embedded default
	$(BIN)/orderengine serve

test: install                 ## the whole suite (integration tests need PostgreSQL and Redis; CI=true makes them mandatory)
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

test-e2e: install
	$(BIN)/python -m pytest tests/e2e

migrate: install
	$(BIN)/orderengine migrate

api: install                  ## production API server (needs DATABASE_URL and REDIS_URL)
	$(BIN)/gunicorn wsgi:app -c gunicorn.conf.py

worker: install               ## production worker (needs DATABASE_URL and REDIS_URL)
	$(BIN)/orderengine worker

venues: install
	$(BIN)/orderengine venues

bench: install                ## benchmarks: print figures (see bench/README.md)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache build *.egg-info
