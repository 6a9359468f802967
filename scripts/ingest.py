"""Snakemake adapter: dataset sources -> manifest.jsonl."""

from defectflow.ingest import run_ingest
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_ingest(
        snakemake.params.dataset_config,
        snakemake.wildcards.dataset,
        snakemake.output.manifest,
        demo_dir=snakemake.params.demo_dir,
    )
