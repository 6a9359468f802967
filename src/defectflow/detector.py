"""The deployable detector: ``infer_config.json`` + the files it names -> predictions.

The pipeline's predict rule and ``defectflow infer`` both go through :class:`Detector`, so a
copied delivery folder gives the pipeline's scores. No Snakemake, no run directory, no network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from defectflow.backbone import BackboneSpec, build_extractor, builtin_weights_path
from defectflow.backends.base import smooth_maps
from defectflow.embeddings import features
from defectflow.errors import IntegrityError, ModelError
from defectflow.io import sha256_file
from defectflow.models import InferConfig, load_checkpoint, read_infer_config, read_safetensors_meta
from defectflow.predictions import PredictionRecord, Region, write_predictions
from defectflow.preprocess import PreprocessSpec, load_rgb, to_tensor
from defectflow.thresholds import normalize

log = logging.getLogger(__name__)


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def check_file(path: Path, expected: str | None, what: str) -> None:
    if not path.is_file():
        raise ModelError(f"{what} {path} does not exist; copy it beside infer_config.json")
    if expected is not None:
        got = sha256_file(path)
        if got != expected:
            raise IntegrityError(
                f"{what} {path} has sha256 {got[:16]}..., infer_config.json records {expected[:16]}...: refusing a changed file"
            )


class Detector:
    """A loaded, integrity-checked model."""

    def __init__(self, cfg: InferConfig, base: Path, threads: int = 1) -> None:
        self.cfg = cfg
        torch.set_num_threads(threads)
        ckpt = base / (cfg.checkpoint.path or "")
        check_file(ckpt, cfg.checkpoint.sha256, "checkpoint")
        if cfg.weights.source == "builtin":
            wpath: Path | None = builtin_weights_path()
        elif cfg.weights.source == "file":
            wpath = base / (cfg.weights.path or "")
        else:
            wpath = None
        if wpath is not None:
            check_file(wpath, cfg.weights.sha256, "backbone weights")
        self.spec = BackboneSpec.model_validate(cfg.backbone)
        self.pp = PreprocessSpec.model_validate(cfg.preprocess)
        self.runner = None
        if cfg.backend == "anomalib":
            from defectflow.backends.anomalib_backend import load_anomalib

            self.runner = load_anomalib(ckpt, read_safetensors_meta(ckpt))
        else:
            self.backend = load_checkpoint(ckpt)
            self.extractor, _ = build_extractor(self.spec, weights=wpath)

    @classmethod
    def load(cls, infer_config: str | Path, threads: int = 1) -> Detector:
        path = Path(infer_config)
        return cls(read_infer_config(path), path.parent, threads=threads)

    def _score_batch(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        if (
            self.runner is not None
        ):  # anomalib: its own transform; maps at input size, already smoothed
            scores, maps = self.runner.score_images(images)
            return scores.double().numpy(), None if maps is None else maps.numpy()
        patch, image = features(
            self.extractor, torch.stack([to_tensor(im, self.pp) for im in images])
        )
        scores, maps = self.backend.score(patch if self.backend.uses_patches else None, image)
        if maps is not None:
            maps = smooth_maps(maps, self.pp.out_size, self.cfg.map_sigma).numpy()
        return scores.double().numpy(), maps

    def predict(
        self, items: list[dict[str, Any]], batch_size: int = 16, maps_dir: Path | None = None
    ) -> tuple[list[PredictionRecord], dict[str, np.ndarray]]:
        """Score ``items`` (dicts with image_path and optional image_id, gt_label, defect_type).

        Returns records in input order, and the normalized maps by image id (model input size).
        An unreadable image yields a record with ``error`` set; the others are still scored.
        """
        from tqdm import tqdm

        records: list[PredictionRecord] = []
        maps_out: dict[str, np.ndarray] = {}
        bar = tqdm(
            total=len(items),
            desc=f"predict {self.cfg.category}/{self.cfg.model}",
            unit="img",
            mininterval=5.0,
            disable=len(items) < 64,
        )
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            slots: list[PredictionRecord | None] = [None] * len(chunk)
            ok, sizes, tensors = [], {}, {}
            for j, it in enumerate(chunk):
                try:
                    img = load_rgb(it["image_path"])  # full decode: catches truncated files here
                    sizes[j] = img.size
                    tensors[j] = img
                    ok.append(j)
                except Exception as exc:  # noqa: BLE001 - any unreadable file becomes an error record
                    slots[j] = self._record(it, error=f"cannot read image: {exc}")
            if ok:
                scores, maps = self._score_batch([tensors[j] for j in ok])
                norm = normalize(scores, self.cfg.threshold)
                for n, j in enumerate(ok):
                    rec = self._record(chunk[j], score=float(scores[n]), norm=float(norm[n]))
                    if maps is not None:
                        m = normalize(maps[n], self.cfg.threshold).astype(np.float32)
                        rec.regions = regions(m, sizes[j])
                        maps_out[rec.image_id] = m
                        if maps_dir is not None:
                            rec.map_path = str(
                                save_heatmap(
                                    m, chunk[j]["image_path"], maps_dir / f"{rec.image_id}.png"
                                )
                            )
                    slots[j] = rec
            records.extend(r for r in slots if r is not None)
            bar.update(len(chunk))
        bar.close()
        return records, maps_out

    def _record(
        self,
        it: dict[str, Any],
        score: float | None = None,
        norm: float | None = None,
        error: str | None = None,
    ) -> PredictionRecord:
        label = None if norm is None else ("anomaly" if norm >= 0.5 else "normal")
        return PredictionRecord(
            image_id=it.get("image_id") or Path(it["image_path"]).stem, image_path=str(it["image_path"]),
            score=None if score is None else _round(score), normalized_score=None if norm is None else _round(norm),
            pred_label=label, gt_label=it.get("gt_label"), defect_type=it.get("defect_type"), model_id=self.cfg.model_id, error=error,
        )  # fmt: skip


def regions(
    norm_map: np.ndarray, image_size: tuple[int, int], max_regions: int = 5
) -> list[Region]:
    """Boxes around connected areas of the normalized map at or above 0.5, in image pixels."""
    mask = norm_map >= 0.5
    if not mask.any():
        return []
    lab, n = ndimage.label(mask)
    h, w = norm_map.shape
    sx, sy = image_size[0] / w, image_size[1] / h
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        area = float((lab[sl] == k).sum()) / (h * w)
        peak = float(norm_map[sl][lab[sl] == k].max())
        out.append(Region(x0=int(sl[1].start * sx), y0=int(sl[0].start * sy), x1=int(np.ceil(sl[1].stop * sx)), y1=int(np.ceil(sl[0].stop * sy)),
                          score=_round(peak), area=_round(area)))  # fmt: skip
    out.sort(key=lambda r: (-r.score, -r.area))
    return out[:max_regions]


def save_heatmap(norm_map: np.ndarray, image_path: str, out: Path) -> Path:
    """The image with the normalized map as a colour overlay (red = above threshold)."""
    from matplotlib import colormaps

    img = load_rgb(image_path)
    heat = Image.fromarray((colormaps["jet"](norm_map)[..., :3] * 255).astype(np.uint8)).resize(
        img.size, Image.Resampling.BILINEAR
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.blend(img, heat, 0.45).save(out)
    return out


def run_predict(infer_config: str | Path, table: str | Path, category: str, out: str | Path, maps_dir: str | Path, out_maps: str | Path,
                split: str = "test", threads: int = 1, batch_size: int = 16) -> int:  # fmt: skip
    """Snakemake entry point: the delivered model on the test split -> predictions.jsonl (+ maps)."""
    from safetensors.numpy import save_file

    from defectflow.io import atomic_path
    from defectflow.standardize import read_standardized

    rows = [
        r for r in read_standardized(table) if r["category"] == category and r["split"] == split
    ]
    det = Detector.load(infer_config, threads=threads)
    items = [
        {
            "image_path": r["image_path"],
            "image_id": r["image_id"],
            "gt_label": r["label"],
            "defect_type": r["defect_type"],
        }
        for r in rows
    ]
    records, maps = det.predict(items, batch_size=batch_size, maps_dir=Path(maps_dir))
    Path(maps_dir).mkdir(parents=True, exist_ok=True)
    write_predictions(records, out)
    with atomic_path(out_maps) as tmp:
        save_file(
            {k: v.astype(np.float16) for k, v in maps.items()}
            or {"_empty": np.zeros(1, np.float16)},
            str(tmp),
        )
    n_err = sum(r.error is not None for r in records)
    log.info(
        "%s: %d predictions (%d anomalies predicted, %d errors)",
        category,
        len(records),
        sum(r.pred_label == "anomaly" for r in records),
        n_err,
    )
    return len(records)
