"""Snakemake adapter: every model's predictions of a category + masks -> metrics.json each."""

from defectflow.logs import log_to
from defectflow.metrics import run_metrics

with log_to(snakemake.log[0]):
    run_metrics(
        list(snakemake.input.predictions),
        list(snakemake.input.maps),
        list(snakemake.input.infer_configs),
        snakemake.input.table,
        snakemake.wildcards.dataset,
        snakemake.wildcards.category,
        list(snakemake.params.models),
        list(snakemake.output.metrics),
    )
