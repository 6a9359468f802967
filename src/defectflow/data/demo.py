"""Built-in demo data: a deterministic, industrial-looking MVTec-layout dataset.

Two categories: ``tile`` (an RGB woven texture) and ``bracket`` (a grayscale metal plate with
four bolts and a bore). Defects look as they do on real parts at the model input (224 px): bright scratches a few
pixels wide, discoloured stains, a dark crack (tile) and a missing bolt (bracket), each with a
pixel mask. Same seed and same
library versions give byte-identical PNGs.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from defectflow.config import DemoConfig
from defectflow.io import write_json_atomic

log = logging.getLogger(__name__)

Array = np.ndarray
DEFECTS = {"tile": ("scratch", "stain", "crack"), "bracket": ("scratch", "stain", "missing_part")}


def _grid(size: int) -> tuple[Array, Array]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return y, x


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> Array:
    """Low-frequency noise in [0, 1]: random grid upsampled bilinearly."""
    coarse = rng.random((cells + 1, cells + 1))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    return np.asarray(img, dtype=np.float64) / 255.0


def _tile(rng: np.random.Generator, size: int) -> Array:
    y, x = _grid(size)
    px, py = rng.uniform(0, 2 * np.pi, 2)
    f = size / 10.0
    weave = 0.5 + 0.25 * np.sin(2 * np.pi * x / f + px) * np.sin(2 * np.pi * y / f + py)
    base = (
        0.55 * weave + 0.3 * _smooth_noise(rng, size, 6) + 0.06 * rng.standard_normal((size, size))
    )
    base = np.clip(base * rng.uniform(0.92, 1.08), 0, 1)
    tint = np.array([0.78, 0.58, 0.40]) * rng.uniform(0.95, 1.05, 3)
    return np.clip(base[..., None] * tint[None, None, :] + 0.12, 0, 1)


def _bolt_centres(size: int, dx: float, dy: float) -> list[tuple[float, float]]:
    m = size * 0.25
    return [
        (m + dy, m + dx),
        (m + dy, size - m + dx),
        (size - m + dy, m + dx),
        (size - m + dy, size - m + dx),
    ]


def _bracket(
    rng: np.random.Generator, size: int, missing: int | None = None
) -> tuple[Array, Array]:
    """Grayscale plate; returns (image, region of the missing bolt or zeros)."""
    y, x = _grid(size)
    dx, dy = rng.uniform(-2.5, 2.5, 2)
    img = 0.22 + 0.04 * _smooth_noise(rng, size, 4)
    lo, hi = size * 0.12, size * 0.88
    plate = (x > lo + dx) & (x < hi + dx) & (y > lo + dy) & (y < hi + dy)
    shade = (
        0.58 + 0.12 * (x - dx) / size - 0.06 * (y - dy) / size + 0.03 * _smooth_noise(rng, size, 8)
    )
    img = np.where(plate, shade, img)
    cy, cx = size / 2 + dy, size / 2 + dx
    r = np.hypot(y - cy, x - cx)
    img = np.where(r < size * 0.11, 0.12, img)
    img = np.where((r >= size * 0.11) & (r < size * 0.125), 0.40, img)
    region = np.zeros((size, size), dtype=bool)
    rb = size * 0.055
    for k, (by, bx) in enumerate(_bolt_centres(size, dx, dy)):
        rr = np.hypot(y - by, x - bx)
        if k == missing:
            region = rr < rb * 1.25
            img = np.where(rr < rb * 0.45, 0.30, img)  # the bare thread hole only
            continue
        img = np.where(rr < rb, 0.86 - 0.25 * rr / rb, img)
        img = np.where((rr >= rb) & (rr < rb * 1.25), 0.35, img)
    img = img * rng.uniform(0.93, 1.07) + 0.02 * rng.standard_normal((size, size))
    return np.clip(img, 0, 1), region


def _line_mask(rng: np.random.Generator, size: int, width: float, jagged: float) -> Array:
    y, x = _grid(size)
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(size * 0.25, size * 0.45)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    v = v + jagged * np.sin(u / 2.3) * np.cos(u / 5.1)
    return (np.abs(v) < width) & (np.abs(u) < length / 2)


def _stain_mask(rng: np.random.Generator, size: int) -> tuple[Array, Array]:
    """A dried-liquid blot: flat inside, a darker rim, a ragged outline."""
    y, x = _grid(size)
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    a, b = rng.uniform(size * 0.07, size * 0.12, 2)
    theta = np.arctan2(y - cy, x - cx)
    ragged = (
        1.0
        + 0.12 * np.sin(3 * theta + rng.uniform(0, 6))
        + 0.06 * np.sin(7 * theta + rng.uniform(0, 6))
    )
    d = np.sqrt(((y - cy) / a) ** 2 + ((x - cx) / b) ** 2) / ragged
    inside = np.clip((1.0 - d) * 6.0, 0, 1)
    rim = np.exp(-(((d - 0.92) / 0.08) ** 2))
    soft = np.clip(0.6 * inside + 0.5 * rim, 0, 1)
    return d < 1.0, soft


def _apply(img: Array, mask: Array, fn: Callable[[Array], Array]) -> Array:
    out = img.copy()
    out[mask] = fn(img[mask])
    return np.clip(out, 0, 1)


def _make(
    category: str, defect: str | None, rng: np.random.Generator, size: int
) -> tuple[Array, Array]:
    missing = int(rng.integers(4)) if defect == "missing_part" else None
    if category == "tile":
        img = _tile(rng, size)
        region = np.zeros((size, size), dtype=bool)
    else:
        img, region = _bracket(rng, size, missing)
    # Defects are sized in pixels of the model input (images are generated at it): a scratch is a
    # bright groove a few pixels wide, a crack a dark jagged line, a stain a discoloured blot.
    px = size / 224.0
    if defect == "scratch":
        region = _line_mask(rng, size, width=rng.uniform(1.2, 1.8) * px, jagged=0.0)
        delta = rng.uniform(0.22, 0.32)
        img = _apply(img, region, lambda v: v + delta)
    elif defect == "crack":
        region = _line_mask(rng, size, width=rng.uniform(1.4, 2.0) * px, jagged=2.5 * px)
        img = _apply(img, region, lambda v: v * rng.uniform(0.3, 0.45))
    elif defect == "stain":
        region, soft = _stain_mask(rng, size)
        strength = rng.uniform(0.45, 0.6)
        if img.ndim == 3:  # a brownish discolouration on the texture
            tint = np.array([0.55, 0.75, 1.0]) * strength
            img = img * (1.0 - soft[..., None] * tint[None, None, :])
        else:
            img = img * (1.0 - strength * soft)
        region = soft > 0.3
    return np.clip(img, 0, 1), region


def _save(arr: Array, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(
        path, format="PNG", optimize=False, compress_level=6
    )


def generate_demo(out_dir: str | Path, cfg: DemoConfig | None = None) -> dict[str, int]:
    """Write the demo dataset (MVTec layout) under ``out_dir``; returns images per category."""
    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    counts = {}
    for category in cfg.categories:
        defects = DEFECTS[category]
        rng = np.random.default_rng([cfg.seed, zlib.crc32(category.encode())])
        root = out / category
        n = 0
        for i in range(cfg.n_train):
            _save(
                _make(category, None, rng, cfg.image_size)[0],
                root / "train" / "good" / f"{i:03d}.png",
            )
            n += 1
        for i in range(cfg.n_test_normal):
            _save(
                _make(category, None, rng, cfg.image_size)[0],
                root / "test" / "good" / f"{i:03d}.png",
            )
            n += 1
        for defect in defects:
            for i in range(cfg.n_test_per_defect):
                img, mask = _make(category, defect, rng, cfg.image_size)
                _save(img, root / "test" / defect / f"{i:03d}.png")
                _save(mask.astype(np.float64), root / "ground_truth" / defect / f"{i:03d}_mask.png")
                n += 1
        counts[category] = n
        log.info("demo category %s: %d images", category, n)
    write_json_atomic(
        out / "demo.json",
        {"generator": "defectflow.data.demo", "config": cfg.model_dump(), "images": counts},
    )
    return counts
