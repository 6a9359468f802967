"""Snakemake adapter: a category's training good images -> synthetic defects and their features."""

from defectflow.features.synthetic import run_synthetic
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_synthetic(
        snakemake.input.table,
        snakemake.input.onnx,
        snakemake.input.card,
        category=snakemake.wildcards.category,
        out_dir=snakemake.output.images,
        out_patches=snakemake.output.patches,
        out_images=snakemake.output.embeddings,
        per_image=snakemake.params.per_image,
        max_images=snakemake.params.max_images,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        batch_size=snakemake.resources.batch_size,  # speed only: a resource
        device=snakemake.resources.device,  # speed only: a resource, not a param
    )
