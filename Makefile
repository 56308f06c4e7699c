# keysteward: the commands a developer and CI use. `make test` is the test command.
#
# Every target builds what it needs first: .venv (from $(PYTHON), 3.11 or later), the Python
# packages (requirements-dev.txt and the project itself) and the Node tools (Azurite, from
# package.json). Each install runs again only when its inputs change: the stamp files are
# named after a checksum of those inputs, so a fresh clone's new file times do not count.
#
# Variables (`make test TESTS=tests/cli PYTEST_ARGS=-x`):
#   TESTS        what pytest collects (default: tests). CI's clean-clone check uses a fast subset.
#   PYTEST_ARGS  pytest options (default: -n 2 --dist loadfile, two workers)
#   PYTHON       the interpreter that creates .venv (default: python3)
#   VENV         the virtual environment (default: .venv); the suite runs with its python
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
TESTS ?= tests
PYTEST_ARGS ?= -n 2 --dist loadfile

PIP_INPUTS := requirements.txt requirements-cli.txt requirements-dev.txt pyproject.toml
NPM_INPUTS := package.json package-lock.json
PIP_STAMP := $(VENV)/.installed-$(shell cat $(PIP_INPUTS) | cksum | cut -d' ' -f1)
NPM_STAMP := node_modules/.installed-$(shell cat $(NPM_INPUTS) | cksum | cut -d' ' -f1)

.PHONY: deps install test test-fast lint bench soak run demo clean browser

deps: $(PIP_STAMP) $(NPM_STAMP)

# The browser suite (tests/ui) drives Debian's Chromium. As root with apt-get (CI), a missing
# Chromium is installed; elsewhere the suite skips and names the command. In CI (CI=true) a
# missing browser fails the suite instead of skipping it.
CHROMIUM ?= /usr/bin/chromium
ifeq ($(CI),true)
export KEYSTEWARD_REQUIRE_BROWSER := 1
endif
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "==> installing Chromium from Debian's packages (the browser suite)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	elif [ ! -x $(CHROMIUM) ]; then \
	  echo "==> $(CHROMIUM) is missing: the browser suite will skip (apt-get install -y chromium chromium-driver)"; \
	fi

install: deps

test: deps browser
	$(VPY) -m pytest $(TESTS) $(PYTEST_ARGS)

test-fast: $(PIP_STAMP)
	$(VPY) -m pytest tests -x -q -m "not loopback and not azurite and not cleanclone"

lint: $(PIP_STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m mypy
	$(VENV)/bin/lint-imports

bench: $(PIP_STAMP)
	$(VPY) -m benchmarks.run

soak: deps
	KEYSTEWARD_SOAK_SEEDS=$${KEYSTEWARD_SOAK_SEEDS:-2000} $(VPY) -m pytest tests/soak -q -n 2 --dist load

run: deps
	@echo "==> starting Azurite, the sandbox (demo estate) and the Functions host (logs in .run/)"
	$(VPY) -m scripts.stack run

demo: deps
	$(VPY) -m scripts.demo

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "keysteward needs Python 3.11 or later: PYTHON=$(PYTHON) is not" >&2; exit 1; }
	@echo "==> creating $(VENV) with $$($(PYTHON) -c 'import sys; print(sys.executable, sys.version.split()[0])')"
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: recreating .venv removes the stamp with it.
$(PIP_STAMP): | $(VPY)
	@echo "==> installing Python packages into $(VENV) (requirements-dev.txt; about 40 s with pip's cache)"
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

$(NPM_STAMP):
	@command -v npm >/dev/null || { echo "keysteward needs Node.js (npm) for Azurite, the storage emulator" >&2; exit 1; }
	@echo "==> installing the Node tools (Azurite, package.json; about 15 s with npm's cache)"
	npm install --no-audit --no-fund --silent
	@rm -f node_modules/.installed-*
	@touch $@

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

az-check: $(AZ_VENV)/bin/az $(PIP_STAMP)
	$(VPY) -m tests.az.az_check --az $(AZ_VENV)/bin/az --markdown .run/az-check.md
