"""Snakemake adapter: manifest.jsonl -> preflight.json + image_facts.parquet."""

from defectflow.data.preflight import run_preflight
from defectflow.logs import log_to

with log_to(snakemake.log.log):
    run_preflight(
        snakemake.input.manifest,
        snakemake.output.report,
        snakemake.output.facts,
        checks=snakemake.params.checks,
        dataset=snakemake.wildcards.dataset,
        report_copy=snakemake.log.report,
        threads=snakemake.threads,
    )
