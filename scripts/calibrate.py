"""Snakemake adapter: checkpoint + val embeddings -> infer_config.json."""

from defectflow.logs import log_to
from defectflow.models import run_calibrate

with log_to(snakemake.log[0]):
    run_calibrate(
        snakemake.input.checkpoint,
        list(snakemake.input.patches),
        list(snakemake.input.images),
        snakemake.input.table,
        snakemake.wildcards.dataset,
        snakemake.wildcards.category,
        snakemake.wildcards.model,
        snakemake.params.backbone,
        snakemake.params.threshold,
        snakemake.output.infer_config,
        seed=snakemake.params.seed,
    )
