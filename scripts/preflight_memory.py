"""Snakemake adapter: preflight.json + backbone.json + models -> preflight_memory.json."""

from defectflow.logs import log_to
from defectflow.memory import run_memory_check

with log_to(snakemake.log[0]):
    run_memory_check(
        snakemake.input.preflight,
        snakemake.input.backbone,
        snakemake.params.models,
        snakemake.wildcards.dataset,
        snakemake.params.max_memory_mb,
        snakemake.output.report,
        severity=snakemake.params.severity,
    )
