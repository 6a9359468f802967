"""Snakemake adapter: manifest + preflight -> standardized.parquet."""

from defectflow.logs import log_to
from defectflow.standardize import run_standardize

with log_to(snakemake.log[0]):
    run_standardize(
        snakemake.input.manifest,
        snakemake.input.report,
        snakemake.input.facts,
        snakemake.output.table,
        snakemake.params.split,
    )
