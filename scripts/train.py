"""Snakemake adapter: stored embeddings -> checkpoint + model card."""

from defectflow.logs import log_to
from defectflow.models import run_train

with log_to(snakemake.log[0]):
    run_train(
        list(snakemake.input.patches),
        list(snakemake.input.images),
        snakemake.wildcards.dataset,
        snakemake.wildcards.category,
        snakemake.wildcards.model,
        snakemake.params.model,
        snakemake.output.checkpoint,
        snakemake.output.card,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
    )
