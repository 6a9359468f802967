"""Snakemake adapter: a dataset's metrics and predictions -> report.html."""

from defectflow.evaluation.report import run_report
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_report(
        snakemake.wildcards.dataset,
        list(snakemake.input.metrics),
        list(snakemake.input.predictions),
        infer_configs=list(snakemake.input.infer_configs),
        preflight=snakemake.input.preflight,
        out=snakemake.output.report,
        memory=snakemake.input.memory,
        leaderboard=snakemake.input.leaderboard,
        table=snakemake.input.table,
        learning_curves=list(snakemake.input.curves),
    )
