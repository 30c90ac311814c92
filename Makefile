# The project's commands. `make demo` and `make test` work on a fresh clone: each sets up
# .venv (once, and again when pyproject.toml changes) before it runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= auto

.PHONY: install test lint typecheck pytest demo demo-campaign bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) -q

test: lint typecheck pytest

demo: $(STAMP)
	$(PY) -m nixflex_engine.demo

demo-campaign: $(STAMP)
	$(PY) -m nixflex_engine.demo_campaign

bench: $(STAMP)
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) .venv-pipecat var .pytest_cache .mypy_cache .ruff_cache
