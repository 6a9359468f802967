"""Snakemake adapter: checkpoint + val embeddings (or images) -> infer_config.json."""

from defectflow.logs import log_to
from defectflow.models import run_calibrate

with log_to(snakemake.log[0]):
    run_calibrate(
        snakemake.input.checkpoint,
        list(snakemake.input.get("patches", [])),
        list(snakemake.input.get("images", [])),
        snakemake.input.table,
        snakemake.wildcards.dataset,
        snakemake.wildcards.category,
        snakemake.wildcards.model,
        snakemake.params.backbone,
        snakemake.params.threshold,
        snakemake.output.infer_config,
        seed=snakemake.params.seed,
    )
