# One entry point for people and CI. `make run` serves; `make test` checks everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run generate check-generated lint typecheck validate-envoy test unit integration e2e soak bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(INSTALLED)

run: install  ## migrate, create a demo account and shared pool once, serve gRPC + JSON
	$(BIN)/mplus db upgrade
	$(BIN)/mplus demo
	$(BIN)/mplus up

generate: install  ## regenerate generated/ from proto/
	PYTHON=$(BIN)/python scripts/generate.sh

check-generated: install  ## fail when generated/ is stale
	PYTHON=$(BIN)/python scripts/generate.sh --check

lint: install
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

validate-envoy: install  ## envoy --mode validate on the config `mplus gateway` would run
	MPLUS_STATE_DIR=$$(mktemp -d) $(BIN)/mplus gateway --validate

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

e2e: install
	$(BIN)/pytest tests/e2e

test: lint typecheck check-generated validate-envoy  ## everything CI runs
	$(BIN)/pytest

soak: install  ## the long fault, fuzz and abuse runs (bounded), then docs/reliability.md
	MPLUS_SOAK=1 timeout 2400 $(BIN)/pytest -p no:cacheprovider tests/reliability tests/e2e/test_replicas.py \
		tests/unit/test_properties.py
	$(BIN)/python -m tests.reliability.report > docs/reliability.md

bench: install  ## h2load against the stack and its ceilings, SQLite and PostgreSQL (~12 min)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
