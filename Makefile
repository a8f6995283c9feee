# lipdub: every target works on a fresh machine with only Python 3.11+ and the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONSTRAINTS := configs/constraints.txt
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])")
PYTEST_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=
CONTRACT_ARGS ?=

.PHONY: help setup test lint format demo sandbox bench chaos contract docs constraints clean

help:
	@echo "make demo   - set up, then run a batch end to end on the bundled stack"
	@echo "make test   - set up, then run the whole test suite"
	@echo "make lint   - ruff and mypy (strict on pipeline/ and workers/)"
	@echo "make sandbox - run the offline lipsync-3 provider on http://127.0.0.1:8199"
	@echo "make bench  - the benchmarks (throughput, limits, polls, re-run, overhead, memory, planning)"
	@echo "make chaos  - fault scenarios at scale (kills, Redis restarts, provider and S3 faults, hostile input, secrets, webhooks)"
	@echo "make docs   - regenerate docs/configuration.md's table from the settings model"
	@echo "make constraints - move configs/constraints.txt's pins to the newest releases (then make test)"
	@echo "make contract - one real paid job against WaveSpeed (needs WAVESPEED_API_KEY; else checks nothing)"

$(BIN)/python:
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 'lipdub needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)')"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The versions CI passed with (configs/constraints.txt), not whatever was released since.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)

# Every pin to its newest release, in a venv of its own (the project's stays as it is).
constraints:
	rm -rf $(VENV)-constraints
	$(PYTHON) -m venv $(VENV)-constraints
	$(VENV)-constraints/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-constraints/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' $(CONSTRAINTS); $(VENV)-constraints/bin/python -m pip freeze --exclude-editable | grep -v '^#'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(VENV)-constraints
	@echo "configs/constraints.txt now pins the newest releases: make test, then commit it"

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check pipeline workers tests
	$(BIN)/ruff format --check pipeline workers tests
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format pipeline workers tests
	$(BIN)/ruff check --fix pipeline workers tests

demo: setup
	$(BIN)/lipdub demo --workdir demo-output

sandbox: setup
	$(BIN)/lipdub sandbox --port 8199

bench: setup
	$(BIN)/python -m tests.bench.run_all $(BENCH_ARGS)

chaos: setup
	$(BIN)/python -m tests.chaos.run_all $(CHAOS_ARGS)

contract: setup
	$(BIN)/python -m tests.contract.run $(CONTRACT_ARGS)

docs: setup
	$(BIN)/python -m pipeline.settings_doc --write docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output lipdub-reports
