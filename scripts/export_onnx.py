"""Snakemake adapter: infer_config.json -> model.onnx + parity report (fails on mismatch)."""

from defectflow.deploy.onnx_export import run_export_onnx
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_export_onnx(
        snakemake.input.infer_config,
        snakemake.input.table,
        snakemake.wildcards.category,
        out_model=snakemake.output.model,
        out_report=snakemake.output.parity,
        tolerance=snakemake.params.tolerance,
    )
