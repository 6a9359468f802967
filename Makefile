# defectflow: `make demo` runs the workflow on the built-in demo data, `make test` runs every check.
# Both create the environment (.venv) when it is missing or pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint dryrun pytest clean env docs

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "defectflow needs Python 3.11 (set PYTHON=...)")'
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

demo: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/snakemake --cores $(CORES) && \
	echo "make demo: done in $$(( $$(date +%s) - start )) s; results under results/demo/"

lint: $(STAMP)
	$(BIN)/ruff check src scripts tests bench
	$(BIN)/ruff format --check src scripts tests bench
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --cores 1

dryrun: $(STAMP)
	$(BIN)/snakemake -n --cores 1 --quiet rules

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint dryrun pytest

docs: $(STAMP)
	$(BIN)/defectflow docs

clean:
	rm -rf results resources logs benchmarks .snakemake
