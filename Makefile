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
	KEYSTEWARD_SOAK_SEEDS=$${KEYSTEWARD_SOAK_SEEDS:-2000} $(PYTEST) tests/soak -q

run:
	bash scripts/run.sh

demo:
	bash scripts/demo.sh

clean:
	rm -rf .run .azurite .mypy_cache .ruff_cache .pytest_cache
