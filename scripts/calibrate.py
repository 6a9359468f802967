"""Snakemake adapter: cross-fit scores + threshold policy -> infer_config.json."""

from defectflow.logs import log_to
from defectflow.models.calibrate import run_calibrate

with log_to(snakemake.log[0]):
    run_calibrate(
        snakemake.input.crossfit,
        snakemake.input.checkpoint,
        snakemake.input.get("onnx"),
        snakemake.input.get("card"),
        snakemake.wildcards.dataset,
        snakemake.wildcards.category,
        snakemake.wildcards.model,
        snakemake.params.threshold,
        snakemake.params.map_sigma,
        snakemake.output.infer_config,
        seed=snakemake.params.seed,
    )
