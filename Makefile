# `make test` and `make demo` are the only commands a fresh machine needs: both create .venv/ in
# the repository root when it is missing and install the project (editable, with dev extras).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ruas-nni-installed

.PHONY: all install test test-slow test-all demo lint clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet 'setuptools>=64,<81' wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make test`: every test but those marked `slow` (NNI experiments, kill-and-resume runs, the quick
# demo: tests/conftest.py lists them); `make test-slow` runs those; `make test-all` (and .ci/run) both.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: test test-slow

demo: $(STAMP)
	$(BIN)/ruas-nni demo

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf build *.egg-info .pytest_cache demo-run
