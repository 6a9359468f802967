"""Snakemake adapter: stored embeddings (or images, for anomalib) -> checkpoint + model card."""

from defectflow.logs import log_to
from defectflow.models import run_train_rule

with log_to(snakemake.log[0]):
    run_train_rule(
        snakemake.input,
        snakemake.wildcards.dataset,
        snakemake.wildcards.category,
        snakemake.wildcards.model,
        snakemake.params.model,
        snakemake.params.image_size,
        snakemake.output.checkpoint,
        snakemake.output.card,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
    )
