# The two set-up commands are `make run` and `make test`; each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= ./var/ossec
STAMP := $(VENV)/.installed

.PHONY: run test test-load lint typecheck pytest bench clean cluster-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/agentpulse start --home $(HOME_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# Four test processes on two cores: the suite mostly waits (timeouts, graces, sleeps): 16 min serial, 6-9 min so.
pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n 4

test: lint typecheck pytest

# The load runs kept out of `make test` (pytest marker `load`): minutes each, for a quiet machine.
test-load: $(STAMP)
	$(BIN)/python -m pytest -q -m load

# A throwaway PostgreSQL, a 3-server NATS cluster and three nodes under var/cluster-demo (docs/cluster.md).
cluster-demo: $(STAMP)
	$(BIN)/python -m agentpulse.cluster.demo --root var/cluster-demo

bench: $(STAMP)
	$(BIN)/python bench/fleet.py --agents 10000 --interval 20 --ramp 20

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
