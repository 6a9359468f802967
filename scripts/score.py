"""Snakemake adapter: checkpoint + one shard's test features (or images) -> raw scores + maps."""

from defectflow.deploy.scoring import run_score
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_score(
        snakemake.input.checkpoint,
        snakemake.input.table,
        snakemake.input.get("features"),
        category=snakemake.wildcards.category,
        shard=int(snakemake.wildcards.shard),
        n_shards=int(snakemake.wildcards.n),
        out_size=snakemake.params.out_size,
        sigma=snakemake.params.sigma,
        out_scores=snakemake.output.scores,
        out_maps=snakemake.output.maps,
        threads=snakemake.threads,
        device=snakemake.resources.device,  # speed only: a resource, not a param
    )
