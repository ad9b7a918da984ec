# NOC Stream. `make test` provisions everything from a fresh clone, then runs the whole suite.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: provision lint typecheck unit test demo bench clean

provision:  ## services (PostgreSQL+TimescaleDB, Mosquitto, test servers) and the Python env
	bash scripts/provision.sh

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

test: provision lint typecheck  ## everything: lint, types, unit, integration, fault, browser
	$(BIN)/pytest

demo: provision  ## the whole system on the provisioned services, with simulated traffic
	$(BIN)/noc db migrate
	$(BIN)/noc demo

bench: provision
	$(BIN)/python -m benchmarks

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
