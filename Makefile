# The two commands of the README: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3

.PHONY: setup demo test test-all lint bench

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	$(PYTHON) -m sparsetrain train --overwrite

test: setup
	$(PYTHON) -m pytest -m "not slow" -q

test-all: setup
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check src tests benchmarks scripts

bench: setup
	$(PYTHON) benchmarks/overhead.py
