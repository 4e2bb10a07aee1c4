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

.PHONY: help setup browser run test test-built unit integration e2e lint tools bench tasks emails upload invoke dlq lock build deploy clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements/dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) ## Create .venv with the locked dependencies

# ARGS=--built runs the built packages under the Lambda runtime emulator: it needs the SAM CLI.
run: setup $(if $(findstring --built,$(ARGS)),.tools/sam/.installed) ## Run the whole system locally: moto, the API on :8000, and the workers
	$(BIN)/offload run $(ARGS)

tasks: setup ## The tasks: make tasks ARGS="list --state dead" (or "show ID", "cancel ID", "retry ID")
	$(BIN)/offload tasks $(or $(ARGS),list)

# The local system by default; for AWS: make dlq ARGS="list --stack offload-prod"
dlq: setup ## DLQ tools: make dlq ARGS="list|redrive|purge --yes [--queue email]"
	$(BIN)/offload dlq $(or $(ARGS),list)

emails: setup ## List the emails the local system's SES has sent
	$(BIN)/offload emails $(ARGS)

upload: setup ## Upload FILE=path.csv to the running local system and print its summary
	@test -n "$(FILE)" || (echo "usage: make upload FILE=path/to/file.csv" && exit 2)
	$(BIN)/offload upload "$(FILE)" $(ARGS)

# The dashboard's browser test drives Debian's Chromium (Playwright, no browser download):
# installed here when missing and this runs as root; otherwise that test skips and says why.
CHROMIUM := /usr/bin/chromium
browser: ## Install Debian's chromium for the dashboard's browser test (as root, if missing)
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium for the dashboard's browser test"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
				>/dev/null) || echo "could not install chromium: the browser test will say so"; \
		else \
			echo "no $(CHROMIUM), and not root to install it: the dashboard's browser test skips"; \
		fi; }

test: setup browser ## Run every test: unit, integration, e2e, reliability
	$(BIN)/pytest

unit: setup ## Only tests/unit (no AWS)
	$(BIN)/pytest tests/unit
integration: setup ## Only tests/integration (moto)
	$(BIN)/pytest tests/integration
e2e: setup browser ## Only tests/e2e (the local system)
	$(BIN)/pytest tests/e2e

# Security and template tools live in their own venvs (.tools/NAME), pinned by
# requirements/tools/NAME.lock: their dependencies conflict with the app's.
TOOLS := .tools
TOOL_NAMES := sam checkov bandit pip-audit
TOOL_STAMPS := $(foreach t,$(TOOL_NAMES),$(TOOLS)/$(t)/.installed)
SAM := $(TOOLS)/sam/bin/sam
export SAM_CLI_TELEMETRY ?= 0

$(TOOLS)/%/.installed: requirements/tools/%.lock | $(STAMP)
	@rm -rf $(TOOLS)/$*
	$(UV) venv --quiet --python $(PYTHON) $(TOOLS)/$*
	$(UV) pip install --quiet --python $(TOOLS)/$*/bin/python -r $<
	@touch $@

tools: $(TOOL_STAMPS) ## Install the lint/security tools into .tools/

# The built package under the Lambda runtime emulator, python3.13, no container (offload invoke).
invoke: setup $(TOOLS)/sam/.installed ## Run a built function: make invoke FUNCTION=EmailWorker EVENT=events/sqs-email-worker.json
	@test -n "$(FUNCTION)" -a -n "$(EVENT)" || (echo "usage: make invoke FUNCTION=ApiFunction EVENT=events/api-health.json" && exit 2)
	UV=$(CURDIR)/$(UV) $(BIN)/offload invoke "$(FUNCTION)" -e "$(EVENT)" $(ARGS)

# The built packages (sam build, cached until a source changes) under the Lambda runtime emulator.
# `make test` runs them too when the tools are there, and skips them otherwise; here they must run.
test-built: setup $(TOOLS)/sam/.installed ## Only tests/built: every built function with its events/
	UV=$(CURDIR)/$(UV) OFFLOAD_REQUIRE_BUILT=1 $(BIN)/pytest tests/built

lint: setup tools ## ruff, mypy, cfn-lint, sam validate, checkov, bandit, pip-audit
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml examples/minimal/template.yaml
	$(SAM) validate --lint --region us-east-1 --template template.yaml
	$(SAM) validate --lint --region us-east-1 --template examples/minimal/template.yaml
	$(TOOLS)/checkov/bin/checkov -f template.yaml --framework cloudformation --skip-download --quiet --compact
	$(TOOLS)/bandit/bin/bandit -q -r src --severity-level medium
	@scripts/pip-audit.sh $(TOOLS)/pip-audit/bin/pip-audit

# ARGS=--quick: a ~2-minute smoke run; ARGS="--latency ses=60" or "--latency off": the latency model.
# The built package's cold start needs the SAM CLI (make tools); without it, that row is skipped.
bench: setup ## Benchmarks, side by side with their baselines (plot: benchmarks/results/bench.svg)
	UV=$(CURDIR)/$(UV) $(BIN)/python -m benchmarks $(ARGS)

lock: ## Re-resolve requirements/*.lock from pyproject.toml and src/requirements/*.in
	@test -x $(UV) || ($(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -q uv==$(UV_VERSION))
	$(UV) pip compile --quiet pyproject.toml --extra dev --python-version 3.11 -o requirements/dev.lock
	for f in api worker; do \
		$(UV) pip compile --quiet src/requirements/$$f.in -c requirements/dev.lock \
			--python-version 3.13 --python-platform aarch64-manylinux2014 $(RUNTIME_PROVIDED) \
			-o src/requirements/$$f.txt; \
	done
	for t in $(TOOL_NAMES); do \
		$(UV) pip compile --quiet requirements/tools/$$t.in --python-version 3.11 \
			-o requirements/tools/$$t.lock; \
	done

# The Lambda Python runtime provides the AWS SDK and its dependencies: functions don't ship them.
RUNTIME_PROVIDED := $(foreach p,boto3 botocore s3transfer jmespath urllib3 python-dateutil six,--no-emit-package $(p))
STACK ?= dev

build: setup tools ## sam build: one package per function (src/Makefile), offline
	UV=$(CURDIR)/$(UV) $(SAM) build --template template.yaml
	@du -sh .aws-sam/build/*/ | sed 's|.aws-sam/build/||'

deploy: build ## sam deploy --config-env STACK (STACK=dev or prod, see samconfig.toml)
	$(SAM) deploy --config-env $(STACK)

clean: ## Remove .venv, .tools and the build and tool caches
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .mypy_cache .ruff_cache
