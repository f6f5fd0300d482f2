# The two set-up commands in the README: `make serve` and `make test` (lint, then the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: serve test lint install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP) -e .

install-test: $(BIN)/python
	$(PIP) -e '.[test]'

serve: install
	$(BIN)/keepwarm serve $(ARGS)

# Lint first, then the suite; any non-zero exit fails `make` (pytest's 5, "no tests collected", included).
# Two worker processes (pytest-xdist; tests/conftest.py says how the work is split).
# The dashboard's tests drive Debian's headless Chromium: install it if it is missing, or say how.
test: lint
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		|| (apt-get update && apt-get install -y chromium chromium-driver) \
		|| { echo "the dashboard tests need Chromium: run 'apt-get install -y chromium chromium-driver' as root" >&2; exit 1; }
	$(BIN)/python -m pytest --numprocesses 2 $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
