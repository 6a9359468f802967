"""Optional whole-model ONNX export (backbone + backend scoring in one graph), with a parity
check against the delivered numpy path: a mismatch beyond the tolerance fails the export.

The scoring below is the backends' numpy scoring written in torch ops so that it can be traced;
the parity check is what keeps the two equal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.errors import ModelError
from defectflow.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


def _torch_scorer(backend: Any):
    import torch

    name = backend.name
    if name == "knn":
        bank = torch.from_numpy(backend.bank)

        def score(patch, image):
            q = image / image.norm(dim=1, keepdim=True).clamp_min(1e-12)
            d = torch.cdist(q, bank)
            return torch.topk(d, min(backend.params.k, len(bank)), largest=False).values.mean(1)

        return score
    if name == "padim":
        mean, inv = torch.from_numpy(backend.mean), torch.from_numpy(backend.inv_cov)
        ch = torch.from_numpy(backend.channels)

        def score(patch, image):
            b, _, h, w = patch.shape
            diff = patch[:, ch].reshape(b, -1, h * w).permute(2, 0, 1) - mean[:, None, :]
            d2 = ((diff @ inv) * diff).sum(-1).clamp_min(0)
            return d2.sqrt().amax(0)

        return score
    if name == "patchcore":
        bank = torch.from_numpy(backend.bank)
        k = min(backend.params.num_neighbors, len(bank))

        def score(patch, image):
            b, c, h, w = patch.shape
            q = patch.permute(0, 2, 3, 1).reshape(-1, c)
            d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bank.T + (bank * bank).sum(1)[None]
            dmin, nn = d2.min(1)
            d = dmin.clamp_min(0).sqrt().reshape(b, h * w)
            best = d.argmax(1)
            rows = torch.arange(b)
            s_star = d[rows, best]
            if k <= 1:
                return s_star
            m_test = q.reshape(b, h * w, c)[rows, best]
            m_star = bank[nn.reshape(b, h * w)[rows, best]]
            nb = torch.topk(torch.cdist(m_star, bank), k, largest=False).indices
            dist_nb = (m_test[:, None, :] - bank[nb]).norm(dim=-1)
            return (1 - torch.softmax(dist_nb, 1)[:, 0]) * s_star

        return score
    raise ModelError(f"backend {name!r} has no ONNX export")


def run_export_onnx(infer_config: str | Path, table: str | Path, category: str, out_model: str | Path,
                    out_report: str | Path, tolerance: float = 1e-3, n_check: int = 8) -> dict[str, Any]:  # fmt: skip
    """Export backbone + scoring to one ONNX graph; compare with the delivered detector."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import compose

    from defectflow.artifacts.standardized import category_rows
    from defectflow.detector import Detector
    from defectflow.preprocess import preprocess

    det = Detector.load(infer_config)
    if det.backbone is None:
        raise ModelError("whole-model ONNX export covers backends that run on the ONNX backbone")
    scorer = _torch_scorer(det.backend)

    class Head(torch.nn.Module):
        def forward(self, patch, embedding):
            return scorer(patch, embedding)

    rows = category_rows(table, category, ("test",))[:n_check]
    x = np.stack([preprocess(r["image_path"], det.pp) for r in rows])
    p, e = det.backbone(x)
    head_path = Path(str(out_model) + ".head.onnx")
    torch.onnx.export(Head(), (torch.from_numpy(p[:1]), torch.from_numpy(e[:1])), str(head_path),
                      input_names=["patch", "embedding"], output_names=["score"], opset_version=17, dynamo=False)  # fmt: skip
    backbone = onnx.load(det.backbone.model_path)
    head = onnx.load(str(head_path))
    head_path.unlink()
    merged = compose.merge_models(
        backbone, head, io_map=[("patch", "patch"), ("embedding", "embedding")], prefix2="head_"
    )
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
    report = {"images": len(rows), "max_relative_difference": rel, "tolerance": tolerance, "passed": rel <= tolerance,
              "input": {"name": "image", "shape": [1, 3, det.pp.out_size, det.pp.out_size], "preprocess": det.pp.model_dump()},
              "output": "head_score (raw; normalize with infer_config.json threshold)"}  # type: ignore[union-attr]  # fmt: skip
    write_json_atomic(out_report, report)
    if rel > tolerance:
        Path(out_model).unlink(missing_ok=True)
        raise ModelError(
            f"ONNX scores differ from the delivered model by {rel:.2e} (relative) > {tolerance}; not delivered"
        )
    log.info("ONNX export %s: parity %.2e on %d images", out_model, rel, len(rows))
    return report
