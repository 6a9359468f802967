"""Snakemake adapter: a model's stored features of a category -> learning_curve.json."""

from defectflow.logs import log_to
from defectflow.models.learning_curve import run_learning_curve

with log_to(snakemake.log[0]):
    run_learning_curve(
        snakemake.input.table,
        list(snakemake.input.features),
        dataset=snakemake.wildcards.dataset,
        category=snakemake.wildcards.category,
        model=snakemake.wildcards.model,
        params=snakemake.params.model,
        seed=snakemake.params.seed,
        start=snakemake.params.start,
        out=snakemake.output.curve,
        synthetic=snakemake.input.get("synthetic"),
        threads=snakemake.threads,
    )
