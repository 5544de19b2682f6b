# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-ui test lint bench-synth clean

setup:
	@scripts/setup.sh

# The whole DAG as a Prefect flow run on the synthetic default, with a temporary Prefect server.
demo: setup
	$(BIN)/signmae demo --config cpu_demo

# The same, then keep the Prefect server and print the run's UI address (Ctrl-C stops it).
demo-ui: setup
	$(BIN)/signmae demo --config cpu_demo --keep-server

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache
