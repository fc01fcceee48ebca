# The two commands of the quick start. Each one creates .venv and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-full lint unit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/broker demo

# The whole suite but the acceptance-size runs (marked full_size), which `make test-full` runs:
# CI (.ci/run) runs both, one after the other.
test: $(STAMP) lint
	$(BIN)/pytest -q -p no:cacheprovider -m "not full_size"

test-full: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m full_size

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

clean:
	rm -rf $(VENV) .broker-data test-output
