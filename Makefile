# The README's two commands: `make run` and `make test`. Each sets up .venv on first use.
# `make test-fast`: the inner loop, every test but those marked slow (under 2 minutes on 2 cores).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RAY    := $(VENV)/.installed-ray

.PHONY: run test test-fast setup clean-venv

setup: $(STAMP)

# torch is pinned to the CPU build that installs from local disk; pyproject keeps a range.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The tests also cover the Ray executor: the optional `ray` extra, installed for them only.
$(RAY): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	touch $(RAY)

run: $(STAMP)
	$(BIN)/harness run

test: $(RAY)
	$(BIN)/python -m pytest

test-fast: $(RAY)
	$(BIN)/python -m pytest -m "not slow"

clean-venv:
	rm -rf $(VENV)
