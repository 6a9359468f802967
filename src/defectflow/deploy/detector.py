"""The deployable detector: ``infer_config.json`` + the files it names -> predictions.

No Snakemake, no run directory, no network, no training code: the ONNX backbone runs in
onnxruntime and the backend scores in numpy (an anomalib model loads its own torch forward).
The pipeline's score and predict stages call this module's scoring and record functions.
"""

from __future__ import annotations

import io
import logging
import warnings
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
from defectflow.models.backends.base import Backend, Features, Images, score_each
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
    backend: Backend, data: Any, out_size: int, sigma: float, desc: str = "score"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw scores and maps at the model input size (smoothed), by image id; each image scored on
    its own (:func:`~defectflow.models.backends.base.score_each`), so a score never depends on
    the images beside it. The pipeline, ``infer``, ``serve`` and ``watch`` all go through this."""
    scores, maps = np.zeros(len(data)), {}
    bar = Progress(len(data), desc) if len(data) > 1 else None
    for i, (sc, mp) in enumerate(score_each(backend, data)):
        scores[i] = sc
        if mp is not None:
            one = mp[None] if backend.maps_final else smooth_maps(mp[None], out_size, sigma)
            # at the precision the pipeline stores maps in (float16), so its regions are ours
            maps[data.ids[i]] = one[0].astype(np.float16).astype(np.float32)
        if bar is not None:
            bar.update(1)
    return scores, maps


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


#: pixels an image may declare before it is decoded (a decompression bomb is refused unread)
MAX_PIXELS = 64_000_000


class ImageRejected(ValueError):
    """An input that is no image this model can score (the message says why); ``too_large``:
    refused for its declared size, not its content."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def decode(
    source: str | Path | bytes, max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image, list[str]]:
    """A file's or a request body's image as 8-bit RGB, with :func:`image_warnings`.

    Its header is read first: more than ``max_pixels`` pixels is refused before decoding (a
    small file may declare a huge image). A truncated or unknown file raises
    :class:`ImageRejected`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            raw = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            with raw:
                w, h = raw.size
                if w * h > max_pixels:
                    raise ImageRejected(
                        f"image declares {w}x{h} px ({w * h / 1e6:.0f} MP), over the "
                        f"{max_pixels / 1e6:.0f} MP this detector decodes",
                        too_large=True,
                    )
                raw.load()  # full decode: catches truncated files
                return to_rgb(raw), image_warnings(raw)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(
            f"image declares more than the {max_pixels / 1e6:.0f} MP this detector decodes "
            f"(a decompression bomb?); refused unread ({exc})",
            too_large=True,
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageRejected(
            "cannot read image: not an image format this detector reads (PNG, JPEG, BMP, TIFF, "
            "WebP, GIF, PNM)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable input becomes one clear refusal
        raise ImageRejected(f"cannot read image: {exc}") from None


class Detector:
    """A loaded, integrity-checked model.

    ``runtime`` runs the backbone: ``onnxruntime`` (default), ``openvino`` (FP32) or
    ``openvino-int8`` (the INT8 model that ``defectflow openvino`` offered; see
    :mod:`defectflow.deploy.openvino_runtime`)."""

    def __init__(
        self,
        cfg: InferConfig,
        base: Path,
        threads: int = 1,
        device: str = "cpu",
        runtime: str = "onnxruntime",
    ) -> None:
        self.device = dev.use(device)
        self.cfg = cfg
        self.base = base
        self.runtime = runtime
        self.backend = load_checkpoint(resolve(base, cfg.checkpoint, "checkpoint"))
        self.pp = (
            PreprocessSpec.model_validate(cfg.preprocess) if cfg.consumes == "features" else None
        )
        self.backbone = None
        if cfg.consumes == "features":
            onnx = resolve(base, cfg.backbone, "backbone")  # type: ignore[arg-type]
            if runtime == "openvino":
                # lazy: openvino only where it is asked for
                from defectflow.deploy.openvino_runtime import OpenVinoBackbone

                self.backbone = OpenVinoBackbone(onnx, threads=threads)
            elif runtime == "openvino-int8":
                # lazy: openvino only where it is asked for
                from defectflow.deploy.openvino_runtime import int8_backbone

                self.backbone = int8_backbone(base, cfg.model_id, threads)
            elif runtime == "onnxruntime":
                self.backbone = make_backbone(
                    str(onnx), cfg.backbone_spec, cfg.weights_sha256, self.device, threads
                )
            else:
                raise ModelError(f"runtime {runtime!r}: use onnxruntime, openvino or openvino-int8")
        elif runtime != "onnxruntime":
            raise ModelError(
                f"runtime {runtime!r}: {cfg.backend} runs its own torch forward, not an ONNX backbone"
            )
        self.out_size = self.pp.out_size if self.pp else int(cfg.preprocess["image_size"])

    @classmethod
    def load(
        cls,
        infer_config: str | Path,
        threads: int = 1,
        device: str = "cpu",
        runtime: str = "onnxruntime",
    ) -> Detector:
        path = Path(infer_config)
        return cls(
            read_infer_config(path), path.parent, threads=threads, device=device, runtime=runtime
        )

    @property
    def needs_files(self) -> bool:
        """The backend reads image files itself (anomalib): request bodies go through a file."""
        return self.backbone is None

    def _features_of(self, batch: np.ndarray) -> Features:
        patch, emb = self.backbone(batch)  # type: ignore[misc]
        return Features([str(i) for i in range(len(batch))], patch, emb)

    def score_loaded(
        self, ids: list[str], images: list[Image.Image], paths: list[str] | None = None
    ) -> list[tuple[float, np.ndarray | None]]:
        """Raw score and normalized map of each decoded image, in order.

        The backbone runs once over the whole list (its rows do not depend on each other; a test
        holds onnxruntime to that), the backend one image at a time: a score is the same
        whichever images share the call. ``paths`` only where :attr:`needs_files`."""
        if self.backbone is not None:
            patch, emb = self.backbone(np.stack([to_array(im, self.pp) for im in images]))  # type: ignore[arg-type]
            data: Any = Features(ids, patch, emb)
        else:
            if paths is None:
                raise ModelError(f"{self.cfg.backend} scores image files: give their paths")
            data = Images(ids, paths, self.out_size)
        scores, maps = score_with_maps(self.backend, data, self.out_size, self.cfg.map_sigma)
        out = []
        for i, sc in zip(ids, scores, strict=True):
            m = maps.get(i)
            nm = normalize(m, self.cfg.threshold).astype(np.float32) if m is not None else None
            out.append((float(sc), nm))
        return out

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
                    loaded[j], warn[j] = decode(it["image_path"])
                    ok.append(j)
                except ImageRejected as exc:
                    slots[j] = record(
                        self.cfg,
                        it["image_id"],
                        str(it["image_path"]),
                        None,
                        None,
                        None,
                        it.get("gt_label"),
                        it.get("defect_type"),
                        error=str(exc),
                    )
            if ok:
                scored = self.score_loaded(
                    [chunk[j]["image_id"] for j in ok],
                    [loaded[j] for j in ok],
                    [str(chunk[j]["image_path"]) for j in ok],
                )
                for j, (score, nm) in zip(ok, scored, strict=True):
                    it, img = chunk[j], loaded[j]
                    rec = record(
                        self.cfg,
                        it["image_id"],
                        str(it["image_path"]),
                        score,
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
