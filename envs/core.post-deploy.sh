#!/usr/bin/env bash
# Snakemake runs this in the new environment, from the workflow's directory: defectflow itself
# (its dependencies are the environment's locked packages).
set -euo pipefail
python -m pip install --quiet --no-deps --no-build-isolation -e .
