"""Snakemake adapter: raw scores + maps + infer_config.json -> predictions.jsonl + heatmaps."""

from defectflow.deploy.predict import run_predict
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_predict(
        snakemake.input.infer_config,
        snakemake.input.scores,
        snakemake.input.maps,
        table=snakemake.input.table,
        category=snakemake.wildcards.category,
        out=snakemake.output.predictions,
        heatmaps=snakemake.output.heatmaps,
    )
