"""Snakemake adapter: config.demo -> built-in demo data folder (MVTec layout)."""

from defectflow.config import DemoConfig
from defectflow.data.demo import generate_demo
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    generate_demo(snakemake.output[0], DemoConfig.model_validate(snakemake.params.demo))
