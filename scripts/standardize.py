"""Snakemake adapter: manifest + preflight -> standardized.parquet."""

from defectflow.data.standardize import run_standardize
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_standardize(
        snakemake.input.manifest,
        snakemake.input.report,
        snakemake.input.facts,
        snakemake.output.table,
        snakemake.params.split,
    )
