# qb_oauth: `make demo` starts the offline demo, `make test` runs the whole suite.
# Both create their own virtualenv (.venv) the first time.

SHELL := /bin/bash
# On machines with pyenv, put every supported Python on PATH (harmless elsewhere).
export PYENV_VERSION ?= 3.11.7:3.12.1:3.13.0
# The newest supported Python found (make's $(shell) does not see exported variables).
PYTHON ?= $(shell for p in python3.13 python3.12 python3; do PYENV_VERSION=$(PYENV_VERSION) $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432

.PHONY: help venv demo test test-sqlite test-postgres lint bench tox clean print-python

help:
	@echo "make demo    the example site, the fake Intuit and a django-q2 cluster, offline"
	@echo "make test    the whole suite on SQLite, then on PostgreSQL ($(PG_HOST):$(PG_PORT))"
	@echo "make lint    ruff, the import contract, mypy and the missing-migrations check"
	@echo "make bench   the benchmarks (figures printed)"
	@echo "make tox     the Python x Django matrix"

$(STAMP): setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python example_project/run_demo.py

test: $(STAMP)
	@$(BIN)/python tests/run_all.py

test-sqlite: $(STAMP)
	$(BIN)/python -m pytest

test-postgres: $(STAMP)
	QB_TEST_DB=postgres $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check qb_oauth tests benchmarks example_project
	PYTHONPATH=. $(BIN)/lint-imports
	PYTHONPATH=. $(BIN)/mypy
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m django makemigrations --check --dry-run qb_oauth

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

tox: $(STAMP)
	$(BIN)/tox

clean:
	rm -rf $(VENV) .tox build dist *.egg-info .pytest_cache .ruff_cache

print-python:
	@echo $(PYTHON); PYENV_VERSION=$(PYENV_VERSION) $(PYTHON) --version
