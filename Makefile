# Two commands for a newcomer: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := demo
DEMO_PEOPLE ?= 2000

.PHONY: install demo run dev test test-sqlite bench bench-scale clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## demo: generate the demo data set and run the whole pipeline on it (SQLite warehouse under demo/.c360/)
demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/c360 demo --people $(DEMO_PEOPLE) --out $(DEMO_DIR)
	$(BIN)/c360 validate --config $(DEMO_DIR)/c360.yaml
	$(BIN)/c360 run --config $(DEMO_DIR)/c360.yaml

## run: land what is new in the demo project since the last run
run: install
	$(BIN)/c360 run --config $(DEMO_DIR)/c360.yaml

## dev: the Dagster UI on the demo project (http://127.0.0.1:3000)
dev: install
	test -f $(DEMO_DIR)/c360.yaml || $(MAKE) demo
	mkdir -p $(DEMO_DIR)/.c360/dagster
	C360_CONFIG=$(DEMO_DIR)/c360.yaml DAGSTER_HOME=$(CURDIR)/$(DEMO_DIR)/.c360/dagster \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## test: the whole suite, on SQLite and on PostgreSQL (127.0.0.1:5432, or C360_TEST_PG)
test: install
	$(BIN)/pytest -n 2 -q

test-sqlite: install
	$(BIN)/pytest -n 2 -q -m "not postgres"

## bench: ingestion throughput and memory, identity accuracy beside Splink (writes benchmarks/RESULTS.md)
bench: install
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/identity.py

## bench-scale: identity on ~1M source records beside Splink (about 20 minutes)
bench-scale: install
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python benchmarks/identity_scale.py --people 440000

clean:
	rm -rf $(VENV) $(DEMO_DIR) .c360 .pytest_cache
