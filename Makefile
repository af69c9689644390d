# `make test` and `make demo` are the only commands a fresh machine needs: both create .venv/ in
# the repository root when it is missing and install the project (editable, with dev extras).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ruas-nni-installed

.PHONY: all install test demo lint clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet 'setuptools>=64,<81' wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/ruas-nni demo

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf build *.egg-info .pytest_cache demo-run
