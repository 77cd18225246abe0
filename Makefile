# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CM := $(BIN)/coremachine --log-level WARNING

AZURITE_VERSION := 3.37.0
AZURITE := .tools/node_modules/.bin/azurite-blob

IAC_VENV := .venv-iac

.PHONY: venv deps dev-deps tools demo test lint typecheck iac package-check unit bench clean

venv: $(BIN)/python

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

deps: $(VENV)/.deps
$(VENV)/.deps: requirements.txt requirements-local.txt pyproject.toml | venv
	$(BIN)/pip install --quiet -r requirements-local.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

dev-deps: $(VENV)/.dev-deps
$(VENV)/.dev-deps: requirements-dev.txt $(VENV)/.deps
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Test tools from npm: Azurite (the Azure Storage emulator) for the Blob Storage tests, in the project's .tools/.
tools: $(AZURITE)
$(AZURITE):
	@command -v npm >/dev/null || { echo "npm is needed to install Azurite (apt-get install npm)"; exit 1; }
	npm install --prefix .tools --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)

# Infrastructure code: Bicep syntax (pycep) and checkov, from their own virtual environment (requirements-iac.txt).
$(IAC_VENV)/.deps: requirements-iac.txt
	$(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/pip install --quiet -r requirements-iac.txt
	touch $@

iac: $(IAC_VENV)/.deps
	$(IAC_VENV)/bin/python infra/check_bicep.py infra
	$(IAC_VENV)/bin/checkov --directory infra --quiet --compact --skip-download

# What Azure installs: requirements.txt must resolve to wheels for CPython 3.12 on Linux x86-64 (no local build).
package-check: venv
	$(BIN)/pip install --quiet --dry-run --ignore-installed --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
		--target $(VENV)/.package-check -r requirements.txt

DOMAINS := --domain annuity_performance --domain annuity_income --domain trustee_performance --domain annual_award

demo: deps
	$(CM) run sum_squares -p upto=10000000 -p chunk_size=5000
	$(CM) run hello_world -p n=500 -p failure_rate=0.1
	$(CM) ingest $(DOMAINS)
	$(CM) ingest $(DOMAINS) --execute

lint: dev-deps
	$(BIN)/ruff check .

typecheck: dev-deps
	$(BIN)/mypy .

test: lint typecheck iac package-check tools
	$(BIN)/pytest -q

bench: dev-deps
	$(BIN)/python -m bench.fanout --runs 3

clean:
	rm -rf $(VENV) $(IAC_VENV) .tools build *.egg-info .mypy_cache .ruff_cache .pytest_cache
