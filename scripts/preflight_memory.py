"""Snakemake adapter: preflight.json + backbone cards + models -> preflight_memory.json."""

from defectflow.logs import log_to
from defectflow.models.memory import run_memory_check

with log_to(snakemake.log[0]):
    run_memory_check(
        snakemake.input.preflight,
        list(snakemake.input.backbones),
        snakemake.params.models,
        dataset=snakemake.wildcards.dataset,
        max_memory_mb=snakemake.params.max_memory_mb,
        out=snakemake.output.report,
        default_backbone=snakemake.params.default_backbone,
        severity=snakemake.params.severity,
    )
