"""Snakemake adapter: a model's predictions and maps of a category + masks -> metrics.json."""

from defectflow.evaluation.metrics import run_metrics
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_metrics(
        snakemake.input.predictions,
        snakemake.input.maps,
        snakemake.input.infer_config,
        crossfit=snakemake.input.crossfit,
        table=snakemake.input.table,
        dataset=snakemake.wildcards.dataset,
        category=snakemake.wildcards.category,
        model=snakemake.wildcards.model,
        out=snakemake.output.metrics,
    )
