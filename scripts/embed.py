"""Snakemake adapter: standardized.parquet -> one shard of a category's stored features."""

from defectflow.config import parse_config
from defectflow.features.embeddings import run_embed
from defectflow.logs import log_to

cfg = parse_config(snakemake.config)
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
        batch_size=cfg.backbone.batch_size,  # speed only: no param
        device=cfg.backbone.device,  # speed only: no param
    )
