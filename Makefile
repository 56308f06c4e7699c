# keysteward: the commands a developer and CI use. `make test` is the test command.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest

.PHONY: install test test-fast lint bench soak run demo clean

install:
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	$(PYTHON) -m pip install -q --no-deps -e .
	npm install --no-audit --no-fund --silent

test:
	$(PYTEST) tests -n 2 --dist loadfile

test-fast:
	$(PYTEST) tests -x -q -m "not loopback and not azurite"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy
	lint-imports

bench:
	$(PYTHON) -m benchmarks.run

soak:
	KEYSTEWARD_SOAK_SEEDS=$${KEYSTEWARD_SOAK_SEEDS:-2000} $(PYTEST) tests/soak -q -n 2 --dist load

# `make run` / `make demo` work on a fresh machine with Python 3.11 and Node: they create .venv.
VENV ?= .venv
VPY = $(VENV)/bin/python

$(VPY): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements-dev.txt
	$(VPY) -m pip install -q --no-deps -e .
	touch $(VPY)

node_modules/.bin/azurite: package.json
	npm install --no-audit --no-fund --silent

run: $(VPY) node_modules/.bin/azurite
	$(VPY) -m scripts.stack run

demo: $(VPY) node_modules/.bin/azurite
	$(VPY) -m scripts.demo

clean:
	rm -rf .run .azurite .mypy_cache .ruff_cache .pytest_cache

# The Azure CLI, a client nobody here wrote, against the sandbox over loopback HTTPS
# (tests/az/az_check.py; results in docs/az-check.md). azure-cli gets its own venv: about
# 730 MB and 75 s to install, so it is a target of its own rather than part of `make test`.
.PHONY: az-check
AZ_VENV ?= .run/az-venv

$(AZ_VENV)/bin/az: tests/az/requirements-az.txt
	$(PYTHON) -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/python -m pip install -q -r tests/az/requirements-az.txt
	touch $@

az-check: $(AZ_VENV)/bin/az
	$(PYTHON) -m tests.az.az_check --az $(AZ_VENV)/bin/az --markdown .run/az-check.md
