"""Snakemake adapter: a dataset's learning curves -> learning_curve.html."""

from defectflow.evaluation.report import run_learning_curve_page
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_learning_curve_page(
        snakemake.wildcards.dataset, list(snakemake.input.curves), snakemake.output.page
    )
