"""Snakemake adapter: a dataset's results -> Label Studio review tasks + labeling config."""

from defectflow.curation.fiftyone import group_model_files
from defectflow.curation.review_tasks import run_review_tasks
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    p = snakemake.params.review
    run_review_tasks(
        snakemake.wildcards.dataset,
        snakemake.input.table,
        snakemake.input.preflight,
        models=group_model_files(
            snakemake.input.predictions, snakemake.input.infer_configs, snakemake.input.maps
        ),
        metrics=list(snakemake.input.metrics),
        document_root=p["document_root"],
        margin=p["margin"],
        max_tasks=p["max_tasks"],
        out_tasks=snakemake.output.tasks,
        out_config=snakemake.output.config,
    )
