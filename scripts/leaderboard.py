"""Snakemake adapter: a dataset's metrics.json files -> leaderboard.parquet + .csv."""

from defectflow.evaluation.leaderboard import run_leaderboard
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_leaderboard(list(snakemake.input.metrics), snakemake.output.parquet, snakemake.output.csv)
