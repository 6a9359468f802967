"""Label Studio review tasks (rule ``review_tasks``, target ``snakemake review``): per dataset, the
images a person should look at (false negatives, false positives, scores near the threshold,
preflight suspects), pre-annotated by the category's best model (image AUROC): a normal/anomaly
choice with its score, the defect regions as rectangles and as a brush mask in Label Studio's RLE
(label-studio-sdk's own encoder), and the labeling config."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from defectflow.artifacts.infer_config import normalize, read_infer_config
from defectflow.artifacts.metrics import read_metrics
from defectflow.artifacts.predictions import read_predictions
from defectflow.artifacts.scores import read_maps
from defectflow.artifacts.standardized import read_standardized
from defectflow.contracts import read_json_artifact
from defectflow.data.preflight_report import PreflightReport
from defectflow.errors import DefectflowError
from defectflow.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

LABEL_CONFIG = """<View>
  <Header value="$reasons"/>
  <Image name="image" value="$image" zoom="true"/>
  <Choices name="verdict" toName="image" choice="single" showInline="true" required="true">
    <Choice value="normal"/>
    <Choice value="anomaly"/>
  </Choices>
  <RectangleLabels name="box" toName="image">
    <Label value="defect" background="red"/>
  </RectangleLabels>
  <BrushLabels name="mask" toName="image">
    <Label value="defect" background="red"/>
  </BrushLabels>
</View>
"""


class ReviewError(DefectflowError):
    """A review step that cannot go on (server down, token refused, foreign export)."""


def _sdk_brush():
    """label-studio-sdk's brush RLE codec (its converter prints missing optional deps: hush)."""
    with contextlib.redirect_stdout(io.StringIO()):
        # lazy: label_studio_sdk (an optional extra) only for review tasks
        from label_studio_sdk.converter import brush
    return brush


def local_files_url(path: str, document_root: str) -> str:
    """Label Studio's URL of a local file under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT."""
    rel = os.path.relpath(Path(path).resolve(), Path(document_root).resolve())
    if rel.startswith(".."):
        raise ReviewError(
            f"{path} is not under the document root {document_root} "
            "(review.document_root); Label Studio can only serve files under it"
        )
    return "/data/local-files/?d=" + urllib.parse.quote(rel, safe="/")


def _best_models(metrics: list[str]) -> dict[str, str]:
    """Category -> model with the highest image AUROC; ties go to the higher pixel AUROC (a model
    with maps gives the reviewer regions), then to name order."""

    best: dict[str, tuple[float, float, str]] = {}
    for f in sorted(metrics):
        m = read_metrics(f)
        au = m.image.auroc if m.image.auroc is not None else -1.0
        px = m.pixel.auroc if m.pixel.auroc is not None else -1.0
        if m.category not in best or (au, px) > best[m.category][:2]:
            best[m.category] = (au, px, m.model)
    return {c: model for c, (_, _, model) in best.items()}


def _prediction_result(rec: Any, norm_map: np.ndarray | None, w: int, h: int) -> list[dict]:
    out: list[dict] = [
        {
            "from_name": "verdict",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [rec.pred_label]},
        }
    ]
    for i, r in enumerate(rec.regions):
        out.append(
            {
                "id": f"box{i}",
                "from_name": "box",
                "to_name": "image",
                "type": "rectanglelabels",
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "value": {
                    "x": 100 * r.x0 / w,
                    "y": 100 * r.y0 / h,
                    "width": 100 * (r.x1 - r.x0) / w,
                    "height": 100 * (r.y1 - r.y0) / h,
                    "rotation": 0,
                    "rectanglelabels": ["defect"],
                },
            }
        )
    if norm_map is not None:
        m = Image.fromarray(((norm_map >= 0.5) * 255).astype(np.uint8)).resize(
            (w, h), Image.NEAREST
        )
        mask = np.asarray(m, np.uint8)
        if mask.any():
            out.append(
                {
                    "id": "mask0",
                    "from_name": "mask",
                    "to_name": "image",
                    "type": "brushlabels",
                    "original_width": w,
                    "original_height": h,
                    "image_rotation": 0,
                    "value": {
                        "format": "rle",
                        "rle": _sdk_brush().mask2rle(mask),
                        "brushlabels": ["defect"],
                    },
                }
            )
    return out


def build_tasks(
    dataset: str,
    table: str | Path,
    preflight: str | Path,
    *,
    models: dict[str, list[dict[str, Any]]],
    metrics: list[str],
    document_root: str,
    margin: float = 0.1,
    max_tasks: int = 200,
) -> list[dict[str, Any]]:
    rows = {r["image_id"]: r for r in read_standardized(table)}
    by_path = {str(Path(r["image_path"]).resolve()): i for i, r in rows.items()}
    suspects: dict[str, set[str]] = {}
    for issue in read_json_artifact("preflight", PreflightReport, preflight).issues:
        p = issue.context.get("path")
        if isinstance(p, str) and str(Path(p).resolve()) in by_path:
            suspects.setdefault(by_path[str(Path(p).resolve())], set()).add(issue.code)
    best = _best_models(metrics)
    order = {"false_negative": 0, "false_positive": 1, "near_threshold": 2, "preflight": 3}
    picked: dict[str, dict[str, Any]] = {}
    for model, per_category in models.items():
        for files in per_category:
            cfg = read_infer_config(files["infer_config"])
            if best.get(cfg.category) != model:
                continue
            maps = {k: v for f in files["maps"] for k, v in read_maps(f).items()}
            for rec in read_predictions(files["predictions"]):
                if rec.normalized_score is None or rec.image_id not in rows:
                    continue
                reasons = []
                if rec.gt_label == "anomaly" and rec.pred_label == "normal":
                    reasons.append("false_negative")
                if rec.gt_label == "normal" and rec.pred_label == "anomaly":
                    reasons.append("false_positive")
                if abs(rec.normalized_score - 0.5) <= margin:
                    reasons.append("near_threshold")
                codes = sorted(suspects.get(rec.image_id, ()))
                if codes:
                    reasons.append("preflight")
                if not reasons:
                    continue
                r = rows[rec.image_id]
                nm = normalize(maps[rec.image_id], cfg.threshold) if rec.image_id in maps else None
                picked[rec.image_id] = {
                    "data": {
                        "image": local_files_url(r["image_path"], document_root),
                        "image_id": rec.image_id,
                        "image_path": r["image_path"],
                        "dataset": dataset,
                        "category": r["category"],
                        "split": r["split"],
                        "label": r["label"],
                        "defect_type": r["defect_type"],
                        "model": model,
                        "score": rec.normalized_score,
                        "reasons": ", ".join(reasons + codes),
                    },
                    "predictions": [
                        {
                            "model_version": cfg.model_id,
                            "score": rec.normalized_score,
                            "result": _prediction_result(rec, nm, r["width"], r["height"]),
                        }
                    ],
                    "_rank": (
                        min(order[x] for x in reasons),
                        abs(rec.normalized_score - 0.5),
                        rec.image_id,
                    ),
                }
    tasks = sorted(picked.values(), key=lambda t: t["_rank"])
    for t in tasks:
        del t["_rank"]
    return tasks[:max_tasks]


def run_review_tasks(
    dataset: str,
    table: str | Path,
    preflight: str | Path,
    *,
    models: dict[str, list[dict[str, Any]]],
    metrics: list[str],
    document_root: str,
    margin: float,
    max_tasks: int,
    out_tasks: str | Path,
    out_config: str | Path,
) -> int:
    """Snakemake entry point."""
    tasks = build_tasks(
        dataset,
        table,
        preflight,
        models=models,
        metrics=metrics,
        document_root=document_root,
        margin=margin,
        max_tasks=max_tasks,
    )
    write_json_atomic(out_tasks, tasks)
    with atomic_path(out_config) as tmp:
        Path(tmp).write_text(LABEL_CONFIG, encoding="utf-8")
    log.info("%s: %d review tasks", dataset, len(tasks))
    return len(tasks)


# -- the Label Studio HTTP API ------------------------------------------------------------------
