"""Calibrate: cross-fitted scores + threshold policy -> ``infer_config.json`` (the deliverable)."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

from defectflow.artifacts.backbone import read_backbone_card
from defectflow.artifacts.checkpoint import checkpoint_meta
from defectflow.artifacts.infer_config import FileRef, InferConfig, write_infer_config
from defectflow.artifacts.scores import read_scores, read_synthetic_scores
from defectflow.config import ThresholdConfig
from defectflow.io import sha256_file
from defectflow.models.backends import entry
from defectflow.models.thresholds import calibrate

log = logging.getLogger(__name__)


def _ref(path: str | Path, base: Path) -> FileRef:
    return FileRef(
        path=Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix(),
        sha256=sha256_file(path),
    )


def run_calibrate(
    crossfit: str | Path,
    checkpoint: str | Path,
    backbone_onnx: str | Path | None,
    *,
    backbone_card: str | Path | None,
    dataset: str,
    category: str,
    model: str,
    threshold: dict[str, Any],
    map_sigma: float,
    out: str | Path,
    synthetic: str | Path | None = None,
    seed: int = 0,
) -> InferConfig:
    """Snakemake entry point."""
    tcfg = ThresholdConfig.model_validate(threshold)
    rows = read_scores(crossfit)
    folds = max((r["fold"] for r in rows), default=-1) + 1
    thr = calibrate(rows, tcfg, folds, read_synthetic_scores(synthetic) if synthetic else None)
    meta = checkpoint_meta(checkpoint)
    e = entry(meta["params"]["backend"])
    out = Path(out)
    versions = {"python": platform.python_version()}
    if e.consumes == "features":
        card = read_backbone_card(backbone_card)  # type: ignore[arg-type]
        bb_ref, spec, pp, wsha = (
            _ref(backbone_onnx, out.parent),
            card.spec,
            card.preprocess,
            card.weights_sha256,
        )  # type: ignore[arg-type]
        versions.update({k: str(v) for k, v in card.versions.items()})
    else:
        extra = meta.get("extra", {})
        bb_ref, spec, wsha = None, extra.get("backbone", {}), extra.get("weights_sha256")
        pp = {
            "image_size": extra.get("image_size"),
            "mean": extra.get("mean"),
            "std": extra.get("std"),
        }
    cfg = InferConfig(
        dataset=dataset,
        category=category,
        model=model,
        backend=e.name,
        params=meta["params"],
        consumes=e.consumes,
        backbone=bb_ref,
        backbone_spec=spec,
        weights_sha256=wsha,
        preprocess=pp,
        checkpoint=_ref(checkpoint, out.parent),
        threshold=thr,
        map_sigma=map_sigma,
        seed=seed,
        search=meta.get("extra", {}).get("search"),
        versions=versions,
        device=meta.get("device", "cpu"),
        digest="",
    )
    cfg = write_infer_config(cfg, out)
    log.info(
        "%s/%s/%s: threshold %.5g (%s) on %d normal (%d folds) and %d anomalous scores; normal "
        "scores %s",
        dataset,
        category,
        model,
        thr.value,
        thr.policy,
        thr.n_normal,
        thr.folds,
        thr.n_anomaly,
        thr.normal_scores,
    )
    return cfg
