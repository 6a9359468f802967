"""The deployable detector: ``infer_config.json`` + the files it names -> predictions.

No Snakemake, no run directory, no network, no training code: the ONNX backbone runs in
onnxruntime and the backend scores in numpy (an anomalib model loads its own torch forward).
The pipeline's score and predict stages call this module's scoring and record functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from defectflow import device as dev
from defectflow.artifacts.checkpoint import load_checkpoint
from defectflow.artifacts.infer_config import FileRef, InferConfig, normalize, read_infer_config
from defectflow.artifacts.predictions import PredictionRecord
from defectflow.deploy.maps import regions, round6, save_heatmap, smooth_maps
from defectflow.errors import IntegrityError, ModelError
from defectflow.features.preprocess import MIN_SIDE, PreprocessSpec, to_array, to_rgb
from defectflow.features.torch_runtime import make_backbone
from defectflow.io import sha256_file, short_hash
from defectflow.models.backends.base import Backend, Features, Images, batches
from defectflow.progress import Progress

log = logging.getLogger(__name__)


def resolve(base: Path, ref: FileRef, what: str) -> Path:
    """A file named in infer_config.json: at its recorded relative path, else beside the config
    (a delivery folder); the first of them whose sha256 matches. A changed file is refused
    only when no candidate matches."""
    candidates = list(dict.fromkeys([base / ref.path, base / Path(ref.path).name]))
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise ModelError(
            f"{what} {ref.path} not found (relative to {base} or beside infer_config.json); copy it there"
        )
    sums = {c: sha256_file(c) for c in found}
    for c, got in sums.items():
        if got == ref.sha256:
            return c
    c, got = next(iter(sums.items()))
    raise IntegrityError(
        f"{what} {c} has sha256 {got[:16]}..., infer_config.json records "
        f"{ref.sha256[:16]}...: refusing a changed file"
    )


def score_with_maps(
    backend: Backend, data: Any, out_size: int, sigma: float, batch: int = 32, desc: str = "score"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw scores and maps at the model input size (smoothed), by image id. The pipeline and
    ``defectflow infer`` both go through this."""
    scores, maps = [], {}
    bar = Progress(len(data), desc)
    for part in batches(data, batch):
        sc, mp = backend.score(part)
        scores.append(np.asarray(sc, np.float64))
        if mp is not None:
            mp = mp if backend.maps_final else smooth_maps(mp, out_size, sigma)
            maps.update(zip(part.ids, mp, strict=True))
        bar.update(len(part))
    return (np.concatenate(scores) if scores else np.zeros(0)), maps


def record(
    cfg: InferConfig,
    image_id: str,
    image_path: str,
    score: float | None,
    norm_map: np.ndarray | None,
    image_size: tuple[int, int] | None,
    gt_label: str | None = None,
    defect_type: str | None = None,
    error: str | None = None,
    warnings: list[str] | None = None,
) -> PredictionRecord:
    """One prediction from a raw score (and normalized map): the pipeline and ``defectflow infer``
    build records here."""
    norm = None if score is None else float(normalize(score, cfg.threshold))
    found = regions(norm_map, image_size) if norm_map is not None and image_size else []
    if not found and norm is not None and norm >= 0.5 and norm_map is not None and image_size:
        # flagged, but smoothing brought the map's peak under the threshold: name where the
        # score comes from all the same, the area within 0.05 of the map's peak
        found = regions(norm_map, image_size, level=float(norm_map.max()) - 0.05)
    return PredictionRecord(
        image_id=image_id,
        image_path=image_path,
        score=None if score is None else round6(score),
        normalized_score=None if norm is None else round6(norm),
        pred_label=None if norm is None else ("anomaly" if norm >= 0.5 else "normal"),
        gt_label=gt_label,
        defect_type=defect_type,
        model_id=cfg.model_id,
        error=error,
        regions=found,
        warnings=warnings or [],
    )


def image_warnings(img: Image.Image) -> list[str]:
    """What the backbone may not represent faithfully (the score is still given)."""
    out = []
    if min(img.size) < MIN_SIDE:
        out.append(
            f"image is {img.size[0]}x{img.size[1]} px: far below the model input, detail is invented by upscaling"
        )
    if img.mode.startswith("I;16") or img.mode in {"I", "F"}:
        out.append(f"{img.mode} image scaled to 8 bit: fine intensity differences are lost")
    if getattr(img, "n_frames", 1) > 1:
        out.append(f"image has {img.n_frames} frames: only the first is scored")
    return out


class Detector:
    """A loaded, integrity-checked model."""

    def __init__(self, cfg: InferConfig, base: Path, threads: int = 1, device: str = "cpu") -> None:
        self.device = dev.use(device)
        self.cfg = cfg
        self.backend = load_checkpoint(resolve(base, cfg.checkpoint, "checkpoint"))
        self.pp = (
            PreprocessSpec.model_validate(cfg.preprocess) if cfg.consumes == "features" else None
        )
        self.backbone = None
        if cfg.consumes == "features":
            onnx = str(resolve(base, cfg.backbone, "backbone"))  # type: ignore[arg-type]
            self.backbone = make_backbone(
                onnx, cfg.backbone_spec, cfg.weights_sha256, self.device, threads
            )
        self.out_size = self.pp.out_size if self.pp else int(cfg.preprocess["image_size"])

    @classmethod
    def load(cls, infer_config: str | Path, threads: int = 1, device: str = "cpu") -> Detector:
        path = Path(infer_config)
        return cls(read_infer_config(path), path.parent, threads=threads, device=device)

    def _features_of(self, batch: np.ndarray) -> Features:
        patch, emb = self.backbone(batch)  # type: ignore[misc]
        return Features([str(i) for i in range(len(batch))], patch, emb)

    def _score(
        self, ids: list[str], paths: list[str], images: list[Image.Image]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self.backbone is not None:
            patch, emb = self.backbone(np.stack([to_array(im, self.pp) for im in images]))  # type: ignore[arg-type]
            data: Any = Features(ids, patch, emb)
        else:
            data = Images(ids, paths, self.out_size)
        return score_with_maps(
            self.backend, data, self.out_size, self.cfg.map_sigma, batch=len(ids)
        )

    def predict(
        self, items: list[dict[str, Any]], batch_size: int = 16, maps_dir: Path | None = None
    ) -> tuple[list[PredictionRecord], dict[str, np.ndarray]]:
        """Score ``items`` (dicts with image_path, image_id and optional gt_label, defect_type).

        Returns records in input order and the normalized maps by image id. An unreadable image
        yields a record with ``error`` set; the others are still scored.
        """
        records: list[PredictionRecord] = []
        maps_out: dict[str, np.ndarray] = {}
        bar = Progress(len(items), f"infer {self.cfg.model_id}")
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            slots: list[PredictionRecord | None] = [None] * len(chunk)
            ok, loaded, warn = [], {}, {}
            for j, it in enumerate(chunk):
                try:
                    with Image.open(it["image_path"]) as raw:
                        raw.load()  # full decode: catches truncated files
                        warn[j] = image_warnings(raw)
                        loaded[j] = to_rgb(raw)
                    ok.append(j)
                except Exception as exc:  # noqa: BLE001 - any unreadable file becomes an error record
                    slots[j] = record(
                        self.cfg,
                        it["image_id"],
                        str(it["image_path"]),
                        None,
                        None,
                        None,
                        it.get("gt_label"),
                        it.get("defect_type"),
                        error=f"cannot read image: {exc}",
                    )
            if ok:
                ids = [chunk[j]["image_id"] for j in ok]
                scores, maps = self._score(
                    ids, [str(chunk[j]["image_path"]) for j in ok], [loaded[j] for j in ok]
                )
                for n, j in enumerate(ok):
                    it, img = chunk[j], loaded[j]
                    m = maps.get(it["image_id"])
                    nm = (
                        normalize(m, self.cfg.threshold).astype(np.float32)
                        if m is not None
                        else None
                    )
                    rec = record(
                        self.cfg,
                        it["image_id"],
                        str(it["image_path"]),
                        float(scores[n]),
                        nm,
                        img.size,
                        it.get("gt_label"),
                        it.get("defect_type"),
                        warnings=warn[j],
                    )
                    if nm is not None:
                        maps_out[it["image_id"]] = nm
                        if maps_dir is not None:
                            rec.map_path = str(
                                save_heatmap(nm, img, maps_dir / heatmap_name(it["image_id"]))
                            )
                    slots[j] = rec
            records.extend(r for r in slots if r is not None)
            bar.update(len(chunk))
        return records, maps_out


def heatmap_name(image_id: str) -> str:
    """A file name for an image id that stays unique (ids may hold '/')."""

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)[-80:]
    return f"{safe}-{short_hash(image_id, 8)}.png"
