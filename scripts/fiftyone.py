"""Snakemake adapter: the pipeline's files of a dataset -> a persistent FiftyOne dataset."""

from pathlib import Path

from defectflow.curation.fiftyone import group_model_files, run_fiftyone
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_fiftyone(
        snakemake.wildcards.dataset,
        Path(snakemake.output.summary).parent.parent,  # the results folder
        snakemake.input.table,
        preflight=snakemake.input.preflight,
        models=group_model_files(
            snakemake.input.predictions, snakemake.input.infer_configs, snakemake.input.maps
        ),
        embeddings=list(snakemake.input.embeddings),
        out=snakemake.output.summary,
        visualization=snakemake.params.visualization,
        seed=snakemake.params.seed,
    )
