"""The backbone as an ONNX graph: built once from timm (torch), then run by onnxruntime for
embedding and for ``defectflow infer``, so both use the same graph and neither imports torch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.artifacts.backbone import BackboneCard, write_backbone_card
from defectflow.config import BackboneConfig  # the workflow's config (the export job reads it)
from defectflow.errors import ModelError
from defectflow.features.backbone import BackboneSpec, build_extractor, default_mean_std
from defectflow.features.preprocess import PreprocessSpec
from defectflow.io import atomic_path, sha256_file

log = logging.getLogger(__name__)


def export_backbone(
    spec: BackboneSpec,
    pp: PreprocessSpec,
    out_onnx: str | Path,
    out_card: str | Path,
    tolerance: float = 1e-3,
) -> BackboneCard:
    """Export the feature extractor to ONNX (dynamic batch) and check onnxruntime against torch."""
    # lazy: onnxruntime only where a backbone runs
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    model, weights_sha = build_extractor(spec)
    side = pp.out_size
    x = torch.from_numpy(
        np.random.default_rng(0).standard_normal((2, 3, side, side)).astype(np.float32)
    )
    with torch.no_grad():
        ref_p, ref_i = model(x)
    with atomic_path(out_onnx) as tmp:
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["image"],
            output_names=["patch", "embedding"],
            dynamic_axes={"image": {0: "batch"}, "patch": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(out_onnx), opts, providers=["CPUExecutionProvider"])
    got_p, got_i = sess.run(None, {"image": x.numpy()})
    err = max(
        float(np.max(np.abs(got_p - ref_p.numpy())) / (np.max(np.abs(ref_p.numpy())) + 1e-12)),
        float(np.max(np.abs(got_i - ref_i.numpy())) / (np.max(np.abs(ref_i.numpy())) + 1e-12)),
    )
    if err > tolerance:
        Path(out_onnx).unlink(missing_ok=True)
        raise ModelError(
            f"the ONNX backbone differs from torch by {err:.2e} (> {tolerance}); not delivered"
        )
    card = BackboneCard(
        spec=spec.model_dump(),
        preprocess=pp.model_dump(),
        weights_sha256=weights_sha,
        onnx_sha256=sha256_file(out_onnx),
        patch_shape=list(ref_p.shape[1:]),
        embedding_dim=int(ref_i.shape[1]),
        parity=err,
        versions=_versions(),
    )
    write_backbone_card(card, out_card)
    log.info(
        "backbone %s exported: patch %s, embedding %d, ONNX vs torch %.1e",
        spec.name,
        tuple(ref_p.shape[1:]),
        ref_i.shape[1],
        err,
    )
    return card


def _versions() -> dict[str, Any]:
    # lazy: onnxruntime only where a backbone runs
    import onnxruntime
    import timm
    import torch

    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def specs(cfg: Any) -> tuple[BackboneSpec, PreprocessSpec]:
    """Backbone and preprocessing specs of a backbone config (``BackboneConfig`` or its dict)."""

    cfg = cfg if isinstance(cfg, BackboneConfig) else BackboneConfig.model_validate(cfg)
    bb = BackboneSpec(name=cfg.name, weights=cfg.weights, layers=cfg.layers, pool=cfg.pool)
    mean, std = default_mean_std(bb)
    return bb, PreprocessSpec(
        image_size=cfg.image_size, center_crop=cfg.center_crop, mean=mean, std=std
    )


def run_export_backbone(
    backbone: dict[str, Any], out_onnx: str | Path, out_card: str | Path
) -> BackboneCard:
    """Snakemake entry point: the backbone config -> ``backbone.onnx`` + ``backbone.json``."""

    return export_backbone(*specs(backbone), out_onnx, out_card)
