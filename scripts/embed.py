"""Snakemake adapter: standardized.parquet -> one shard of stored embeddings."""

from defectflow.embeddings import run_embed
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_embed(
        snakemake.input.table,
        snakemake.wildcards.category,
        int(snakemake.wildcards.shard),
        snakemake.params.backbone,
        snakemake.output.patches,
        snakemake.output.images,
        threads=snakemake.threads,
    )
