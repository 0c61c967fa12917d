# One venv for everything; torch is pinned and installed first (CPU build, see DEVELOPERS.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test serve test lint typecheck ingest eval bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/python -m service serve --host $(HOST) --port $(PORT)

ingest: install
	$(BIN)/python -m service ingest

lint: install-test
	$(BIN)/ruff check service tests eval
	$(BIN)/ruff format --check service tests eval

typecheck: install-test
	$(BIN)/mypy

test: install-test lint typecheck
	$(BIN)/python -m pytest

eval: install-test
	$(BIN)/python -m service eval

bench: install-test
	$(BIN)/python -m service bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
