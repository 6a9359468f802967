"""Snakemake adapter: leaderboards -> one more run in runs/registry.parquet (+ results/run.json)."""

from pathlib import Path

from defectflow.config import parse_config
from defectflow.evaluation.registry import RUN_REGISTRY, record_run
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    record_run(
        parse_config(snakemake.config).model_dump(mode="json"),  # the resolved config
        list(snakemake.input.leaderboards),
        list(snakemake.input.manifests),
        backbone_cards=list(snakemake.input.cards),
        registry=RUN_REGISTRY,
        out=snakemake.output.run,
        code_root=Path(snakemake.scriptdir).parent,  # the workflow's repository
    )
