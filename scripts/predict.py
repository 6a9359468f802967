"""Snakemake adapter: infer_config.json (the delivered model) on the test split -> predictions."""

from defectflow.detector import run_predict
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_predict(
        snakemake.input.infer_config,
        snakemake.input.table,
        snakemake.wildcards.category,
        snakemake.output.predictions,
        snakemake.output.heatmaps,
        snakemake.output.maps,
        threads=snakemake.threads,
        batch_size=snakemake.params.batch_size,
    )
