# Two commands on a fresh machine: `make run` (the service) and `make test` (the whole suite).
# Both bootstrap the pinned toolchain first: uv in .tools/, the locked dependencies in .venv/.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv

.PHONY: setup run test lint worker bench clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --locked --quiet
	@touch $@

setup: $(VENV)/.synced

## Embedded mode: SQLite in var/, in-process worker, demo tenants, on http://127.0.0.1:8000
run: setup
	$(VENV)/bin/msp serve --demo

## Lint, type-check and run every test (SQLite and PostgreSQL; Redis and RabbitMQ for the broker tests)
test: setup lint
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## Separate workers (production mode): needs MSP_BROKER_URL
worker: setup
	$(VENV)/bin/msp worker

clean:
	rm -rf .tools $(VENV) var .mypy_cache .ruff_cache
