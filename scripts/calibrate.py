"""Snakemake adapter: cross-fit scores + threshold policy -> infer_config.json."""

from defectflow.logs import log_to
from defectflow.models.calibrate import run_calibrate

with log_to(snakemake.log[0]):
    run_calibrate(
        snakemake.input.crossfit,
        snakemake.input.checkpoint,
        snakemake.input.get("onnx"),
        backbone_card=snakemake.input.get("card"),
        dataset=snakemake.wildcards.dataset,
        category=snakemake.wildcards.category,
        model=snakemake.wildcards.model,
        threshold=snakemake.params.threshold,
        map_sigma=snakemake.params.map_sigma,
        out=snakemake.output.infer_config,
        synthetic=snakemake.input.get("synthetic"),
        seed=snakemake.params.seed,
    )
