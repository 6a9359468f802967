"""Optional whole-model ONNX export (backbone + backend scoring in one graph), with a parity
check against the delivered numpy path: a mismatch beyond the tolerance fails the export.

Each exportable backend writes its numpy scoring in torch ops (``torch_scorer``) so that it can
be traced; the parity check here is what keeps the two equal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.artifacts.standardized import category_rows
from defectflow.deploy.detector import Detector
from defectflow.errors import ModelError
from defectflow.features.preprocess import preprocess
from defectflow.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


def run_export_onnx(
    infer_config: str | Path,
    table: str | Path,
    category: str,
    *,
    out_model: str | Path,
    out_report: str | Path,
    tolerance: float = 1e-3,
    n_check: int = 8,
) -> dict[str, Any]:
    """Export backbone + scoring to one ONNX graph; compare with the delivered detector."""
    # lazy: onnx only for the export
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import compose

    det = Detector.load(infer_config)
    if det.backbone is None:
        raise ModelError("whole-model ONNX export covers backends that run on the ONNX backbone")
    if not hasattr(det.backend, "torch_scorer"):
        raise ModelError(f"backend {det.backend.name!r} has no ONNX export")
    scorer = det.backend.torch_scorer()

    class Head(torch.nn.Module):
        def forward(self, patch, embedding):
            return scorer(patch, embedding)

    rows = category_rows(table, category, ("test",))[:n_check]
    x = np.stack([preprocess(r["image_path"], det.pp) for r in rows])
    p, e = det.backbone(x)
    head_path = Path(str(out_model) + ".head.onnx")
    torch.onnx.export(
        Head(),
        (torch.from_numpy(p[:1]), torch.from_numpy(e[:1])),
        str(head_path),
        input_names=["patch", "embedding"],
        output_names=["score"],
        opset_version=17,
        dynamo=False,
    )
    backbone = onnx.load(det.backbone.model_path)
    head = onnx.load(str(head_path))
    head_path.unlink()
    head = compose.add_prefix(head, "head_")
    used = {i.name for i in head.graph.input}  # the exporter drops inputs a scorer does not read
    io_map = [(o, f"head_{o}") for o in ("patch", "embedding") if f"head_{o}" in used]
    merged = compose.merge_models(backbone, head, io_map=io_map)
    with atomic_path(out_model) as tmp:
        onnx.save(merged, str(tmp))
    sess = ort.InferenceSession(str(out_model), providers=["CPUExecutionProvider"])
    got = np.concatenate(
        [sess.run(["head_score"], {"image": x[i : i + 1]})[0] for i in range(len(x))]
    )
    ref = np.concatenate(
        [det.backend.score(det._features_of(x[i : i + 1]))[0] for i in range(len(x))]
    )
    rel = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6)))
    report = {
        "images": len(rows),
        "max_relative_difference": rel,
        "tolerance": tolerance,
        "passed": rel <= tolerance,
        "input": {
            "name": "image",
            "shape": [1, 3, det.pp.out_size, det.pp.out_size],
            "preprocess": det.pp.model_dump(),
        },
        "output": "head_score (raw; normalize with infer_config.json threshold)",
    }  # type: ignore[union-attr]
    write_json_atomic(out_report, report)
    if rel > tolerance:
        Path(out_model).unlink(missing_ok=True)
        raise ModelError(
            f"ONNX scores differ from the delivered model by {rel:.2e} (relative) > {tolerance}; not delivered"
        )
    log.info("ONNX export %s: parity %.2e on %d images", out_model, rel, len(rows))
    return report
