# defectflow: `make demo` runs the workflow on the built-in demo data, `make test` runs every check.
# Both create the environment (.venv) when it is missing or pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: lock demo test lint dryrun pytest clean env docs slurm-deps test-slurm labelstudio browser-deps

env: $(STAMP)

# Every environment installs from a committed lock (exact versions and sha256 hashes, made by
# `make lock` from the direct pins): pip refuses any file whose hash is not in it.
PIP_LOCKED := -m pip install --quiet --require-hashes --no-deps
$(STAMP): pyproject.toml locks/pip.txt locks/venv.txt locks/label-studio-sdk.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "defectflow needs Python 3.11 (set PYTHON=...)")'
	$(BIN)/python $(PIP_LOCKED) -r locks/pip.txt
	$(BIN)/python $(PIP_LOCKED) -r locks/venv.txt
	# label-studio-sdk only for its brush RLE codec; its own pins would move numpy
	$(BIN)/python $(PIP_LOCKED) -r locks/label-studio-sdk.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# every requirement met, but label-studio-sdk's own (installed for one codec, without them)
	! $(BIN)/python -m pip check | grep -v -e '^label-studio-sdk ' -e '^No broken requirements'
	@touch $@

# Regenerate every lock from the direct pins (pyproject.toml, locks/*.in, envs/*.in). Change a
# pin there, run this, commit both; tests/test_envs.py fails while a lock disagrees with its pins.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock"
lock: $(STAMP)
	$(UV_COMPILE) pyproject.toml --extra test --extra slurm --extra cluster --extra serve --extra openvino -o locks/venv.txt
	$(UV_COMPILE) locks/pip.in -o locks/pip.txt
	$(UV_COMPILE) --no-deps locks/label-studio-sdk.in -o locks/label-studio-sdk.txt
	$(UV_COMPILE) locks/labelstudio.in -o locks/labelstudio.txt
	$(BIN)/python locks/conda_envs.py $(BIN)/uv core curate models

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

test: lint dryrun slurm-deps browser-deps labelstudio pytest

# Label Studio in a venv of its own (its numpy/opencv pins cannot share ours), for
# `defectflow review` and tests/test_review.py.
LS_VENV := .venv-labelstudio
labelstudio: $(LS_VENV)/.installed

$(LS_VENV)/.installed: locks/pip.txt locks/labelstudio.txt
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python $(PIP_LOCKED) -r locks/pip.txt
	$(LS_VENV)/bin/python $(PIP_LOCKED) -r locks/labelstudio.txt
	@touch $@

# A real one-node SLURM for tests/test_slurm.py: Debian slurm-wlm and munge (root only; the test
# skips, saying why, where they cannot be installed).
slurm-deps:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "slurm-deps: not root, slurm-wlm and munge not installed (the SLURM test will skip)"; \
	else export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null; } || \
	  echo "slurm-deps: apt-get could not install slurm-wlm and munge (the SLURM test will skip)"; fi

# Headless Debian chromium, for the report's screenshot test (root only; the test skips, saying
# why, without it).
browser-deps:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "browser-deps: not root, chromium not installed (the screenshot test will skip)"; \
	else export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; } || \
	  echo "browser-deps: apt-get could not install chromium (the screenshot test will skip)"; fi

# The demo through profiles/slurm on that cluster, with a job cancelled and the run repeated.
test-slurm: $(STAMP) slurm-deps
	$(BIN)/python -m pytest -q tests/test_slurm.py

docs: $(STAMP)
	$(BIN)/defectflow docs

clean:
	rm -rf results resources logs benchmarks .snakemake
