"""Snakemake adapter: stored features (or images) -> checkpoint, model card, cross-fit scores."""

from defectflow.logs import log_to
from defectflow.models.train import run_train

with log_to(snakemake.log[0]):
    run_train(
        snakemake.input.table,
        list(snakemake.input.get("features", [])),
        snakemake.wildcards.dataset,
        category=snakemake.wildcards.category,
        model=snakemake.wildcards.model,
        params=snakemake.params.model,
        folds=snakemake.params.folds,
        leave_one_out=snakemake.params.leave_one_out,
        member_checkpoints=list(snakemake.input.get("member_checkpoints", [])),
        member_crossfits=list(snakemake.input.get("member_crossfits", [])),
        out_ckpt=snakemake.output.checkpoint,
        out_card=snakemake.output.card,
        out_crossfit=snakemake.output.crossfit,
        synthetic=snakemake.input.get("synthetic"),
        member_synthetic=list(snakemake.input.get("member_synthetic", [])),
        out_synthetic=snakemake.output.synthetic,
        image_size=snakemake.params.image_size,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        device=snakemake.resources.device,  # speed only: a resource, not a param
    )
