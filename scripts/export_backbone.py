"""Snakemake adapter: backbone config -> backbone.onnx + backbone.json (parity-checked)."""

from defectflow.features.export import run_export_backbone
from defectflow.logs import log_to

with log_to(snakemake.log[0]):
    run_export_backbone(snakemake.params.backbone, snakemake.output.onnx, snakemake.output.card)
