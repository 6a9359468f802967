"""Snakemake adapter: dataset sources -> manifest.jsonl (+ box masks of COCO/YOLO sources)."""

from defectflow.data.ingest import run_ingest
from defectflow.logs import log_to

with log_to(snakemake.log.log):
    run_ingest(
        snakemake.params.dataset_config,
        snakemake.wildcards.dataset,
        snakemake.output.manifest,
        demo_dir=snakemake.params.demo_dir,
        mask_dir=snakemake.output.box_masks,
        report=snakemake.log.report,
    )
