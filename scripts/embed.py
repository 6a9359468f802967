"""Snakemake adapter: standardized.parquet -> one shard of a category's stored features."""

from defectflow.features.embeddings import run_embed
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_embed(
        snakemake.input.table,
        snakemake.input.onnx,
        snakemake.input.card,
        category=snakemake.wildcards.category,
        shard=int(snakemake.wildcards.shard),
        n_shards=int(snakemake.wildcards.n),
        out_patches=snakemake.output.patches,
        out_images=snakemake.output.images,
        threads=snakemake.threads,
        batch_size=snakemake.resources.batch_size,  # speed only: a resource
        device=snakemake.resources.device,  # speed only: a resource, not a param
    )
