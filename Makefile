# The front door. `make demo` and `make test` work on a fresh machine: they create .venv and install the
# pinned dependencies first. Everything else is a step they use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Local runs never reach AWS: fixed fake credentials, no instance-metadata probing.
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED := true

.PHONY: help venv lint typecheck test unit demo bench layers clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv with the pinned dependencies

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on the core and the emulator
	$(BIN)/mypy

unit: $(STAMP) ## the fast tests only (no network, no layer build)
	$(BIN)/pytest -m "not integration and not layer"

test: lint typecheck ## everything CI runs: lint, types, all tests
	$(BIN)/pytest

demo: $(STAMP) ## start the emulator with sample image sets and verify each one
	$(BIN)/python -m local.demo

bench: $(STAMP) ## the benchmarks (ratios against a baseline in the same run)
	$(BIN)/python -m bench.kernel
	$(BIN)/python -m bench.image_set
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.job_parse

layers: ## build the Lambda layers for x86_64 into build/layers (ARCH=arm64 for Graviton)
	$(MAKE) -C layers/codecs build-CodecsLayer ARTIFACTS_DIR=$(CURDIR)/build/layers/codecs-$(or $(ARCH),x86_64) ARCH=$(or $(ARCH),x86_64)
	$(MAKE) -C layers/core build-CoreLayer ARTIFACTS_DIR=$(CURDIR)/build/layers/core

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) build .aws-sam .pytest_cache .mypy_cache .ruff_cache
