# Quickstart: `make demo` runs the zip-code workflow locally on the demo SQLite database;
# `make test` runs the test suite. Both make .venv and install into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
EDITABLE := -e . $(foreach p,$(PLUGINS),-e ./$(p))

.PHONY: demo test lint install install-test bench bench-seed clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q $(EDITABLE)

install-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]" $(foreach p,$(PLUGINS),-e ./$(p))

demo: install
	$(BIN)/sqladapter seed
	$(BIN)/sqladapter run workflows/people_by_zip.json --input '{"zip": "12345"}'

test: install-test
	$(BIN)/python -m pytest

# ruff's checks and format, and mypy, on the package and the plugins (CI runs this before the tests).
lint: install-test
	$(BIN)/ruff check sqladapter plugins
	$(BIN)/ruff format --check sqladapter plugins
	$(BIN)/mypy

# Ratios against baselines measured in the same run; writes benchmarks/results.md.
bench: install
	$(BIN)/python -m benchmarks.run

# A million people seeded into SQLite and DuckDB, as a ratio to the bare driver's bulk insert.
bench-seed: install
	$(BIN)/python -m benchmarks.seed_people

clean:
	rm -rf $(VENV) fake_people.db .pytest_cache
