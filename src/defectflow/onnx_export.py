"""Optional ONNX export of a delivered model (backbone + backend scoring in one graph), with a
parity check against the torch path: a mismatch beyond the tolerance fails the export."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defectflow.errors import ModelError
from defectflow.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


class ScoringGraph(torch.nn.Module):
    """Preprocessed image batch -> (raw scores, low-resolution maps)."""

    def __init__(self, detector: Any) -> None:
        super().__init__()
        self.extractor = detector.extractor
        self.backend = detector.backend

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch, image = self.extractor(x)
        patch = patch.to(torch.float16).float()
        scores, maps = self.backend.score(patch if self.backend.uses_patches else None, image)
        if maps is None:
            maps = torch.zeros(x.shape[0], 1, 1)
        return scores, maps


def run_export_onnx(infer_config: str | Path, table: str | Path, category: str, out_model: str | Path, out_report: str | Path,
                    tolerance: float = 1e-3, n_check: int = 16) -> dict[str, Any]:  # fmt: skip
    """Export to ONNX and compare onnxruntime scores with torch scores on test images."""
    import onnxruntime as ort

    from defectflow.detector import Detector
    from defectflow.preprocess import preprocess
    from defectflow.standardize import read_standardized

    det = Detector.load(infer_config)
    if det.runner is not None:
        raise ModelError(
            "ONNX export covers the embedding backends (knn, patchcore, padim); use anomalib's own exporter for anomalib models"
        )
    graph = ScoringGraph(det).eval()
    rows = [
        r for r in read_standardized(table) if r["category"] == category and r["split"] == "test"
    ][:n_check]
    x = torch.stack([preprocess(r["image_path"], det.pp) for r in rows])
    with torch.no_grad():
        ref_scores, _ = graph(x)
    with atomic_path(out_model) as tmp:
        # batch of one: the chunked nearest-neighbour search is traced for that shape
        torch.onnx.export(
            graph,
            (x[:1],),
            str(tmp),
            input_names=["image"],
            output_names=["score", "map"],
            opset_version=17,
            dynamo=False,
        )
    sess = ort.InferenceSession(str(out_model), providers=["CPUExecutionProvider"])
    got = np.concatenate(
        [sess.run(["score"], {"image": x[i : i + 1].numpy()})[0] for i in range(len(x))]
    )
    ref = ref_scores.numpy()
    rel = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6)))
    report = {"images": len(rows), "max_relative_difference": rel, "tolerance": tolerance, "passed": rel <= tolerance,
              "input": {"name": "image", "shape": [1, 3, det.pp.out_size, det.pp.out_size], "preprocess": det.pp.model_dump()}}  # fmt: skip
    write_json_atomic(out_report, report)
    if rel > tolerance:
        Path(out_model).unlink(missing_ok=True)
        raise ModelError(
            f"ONNX scores differ from torch by {rel:.2e} (relative) > tolerance {tolerance}; the export is not delivered"
        )
    log.info(
        "ONNX export %s: parity %.2e on %d images (tolerance %g)",
        out_model,
        rel,
        len(rows),
        tolerance,
    )
    return report
