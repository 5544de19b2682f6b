# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench-synth clean

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/signmae demo --config cpu_demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache
