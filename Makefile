# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CM := $(BIN)/coremachine --log-level WARNING

.PHONY: venv deps dev-deps demo test lint typecheck unit bench clean

venv: $(BIN)/python

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

deps: $(VENV)/.deps
$(VENV)/.deps: requirements.txt pyproject.toml | venv
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

dev-deps: $(VENV)/.dev-deps
$(VENV)/.dev-deps: requirements-dev.txt $(VENV)/.deps
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

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

test: lint typecheck
	$(BIN)/pytest -q

bench: dev-deps
	$(BIN)/python -m bench.fanout --runs 3

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
