# Offload: `make run` starts the local system, `make test` runs every test. Both set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed-$(shell cat requirements/dev.lock pyproject.toml | sha1sum | cut -c1-12)
export POWERTOOLS_TRACE_DISABLED ?= true
export POWERTOOLS_DEV ?= false

.PHONY: help setup run test unit integration e2e lint bench emails lock build deploy clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --quiet --python $(BIN)/python -r requirements/dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) ## Create .venv with the locked dependencies

run: setup ## Run the whole system locally: moto, the API on :8000, and the workers
	$(BIN)/python -m local run $(ARGS)

emails: setup ## List the emails the local system's SES has sent
	$(BIN)/python -m local emails

test: setup ## Run every test: unit, integration, e2e
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest tests/unit
integration: setup
	$(BIN)/pytest tests/integration
e2e: setup
	$(BIN)/pytest tests/e2e

lint: setup ## ruff, mypy, cfn-lint
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml

bench: setup ## Benchmarks, side by side with their baselines
	$(BIN)/python -m benchmarks

lock: ## Re-resolve requirements/*.lock from pyproject.toml and src/requirements/*.in
	@test -x $(UV) || ($(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -q uv==$(UV_VERSION))
	$(UV) pip compile --quiet pyproject.toml --extra dev --python-version 3.11 -o requirements/dev.lock

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
