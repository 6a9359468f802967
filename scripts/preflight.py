"""Snakemake adapter: manifest.jsonl -> preflight.json + image_facts.parquet."""

from defectflow.logs import log_to
from defectflow.preflight import run_preflight

with log_to(snakemake.log.log):
    run_preflight(
        snakemake.input.manifest,
        snakemake.output.report,
        snakemake.output.facts,
        snakemake.params.checks,
        dataset=snakemake.wildcards.dataset,
        report_copy=snakemake.log.report,
        threads=snakemake.threads,
    )
