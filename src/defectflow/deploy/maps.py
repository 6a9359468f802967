"""Anomaly-map post-processing shared by the pipeline and ``defectflow infer`` (numpy/scipy):
upsampling to the model input, Gaussian smoothing, defect boxes and heatmap images."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from defectflow.artifacts.predictions import Region
from defectflow.io import atomic_path


@functools.cache
def _upsample_matrix(src: int, dst: int) -> np.ndarray:
    """Bilinear interpolation matrix ``[dst, src]`` (half-pixel centres, edges clamped)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, src - 1)
    w = pos - i0
    m = np.zeros((dst, src))
    m[np.arange(dst), i0] += 1 - w
    m[np.arange(dst), i1] += w
    return m


def smooth_maps(maps: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Upsample ``[B, h, w]`` maps to ``size`` x ``size`` and smooth them with a Gaussian."""
    # lazy: scipy (0.3-0.5 s) only where it is used, not on every import of the module
    from scipy.ndimage import gaussian_filter

    b, h, w = maps.shape
    uh, uw = _upsample_matrix(h, size), _upsample_matrix(w, size)
    out = uh @ maps.astype(np.float64) @ uw.T  # [S, h] @ [B, h, w] @ [w, S] -> [B, S, S]
    if sigma > 0:
        out = gaussian_filter(out, sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)
    return out.astype(np.float32)


def round6(x: float) -> float:
    """Six significant digits: what records and regions carry (stable across platforms)."""
    return float(f"{x:.6g}")


def regions(
    norm_map: np.ndarray, image_size: tuple[int, int], max_regions: int = 5, level: float = 0.5
) -> list[Region]:
    """Boxes around connected areas of the normalized map at or above ``level`` (the
    threshold, 0.5), in image pixels."""
    # lazy: scipy (0.3-0.5 s) only where it is used, not on every import of the module
    from scipy import ndimage

    mask = norm_map >= level
    if not mask.any():
        return []
    lab, _ = ndimage.label(mask)
    h, w = norm_map.shape
    sx, sy = image_size[0] / w, image_size[1] / h
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        inside = lab[sl] == k
        out.append(
            Region(
                x0=int(sl[1].start * sx),
                y0=int(sl[0].start * sy),
                x1=int(np.ceil(sl[1].stop * sx)),
                y1=int(np.ceil(sl[0].stop * sy)),
                score=round6(float(norm_map[sl][inside].max())),
                area=round6(float(inside.sum()) / (h * w)),
            )
        )
    out.sort(key=lambda r: (-r.score, -r.area))
    return out[:max_regions]


def jet(x: np.ndarray) -> np.ndarray:
    """The jet colour map of values in [0, 1] -> uint8 RGB."""
    x = np.clip(x, 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * x - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).astype(np.uint8)


def save_heatmap(norm_map: np.ndarray, image: Image.Image, out: Path) -> Path:
    """The image with the normalized map as a colour overlay (red = above threshold)."""

    heat = Image.fromarray(jet(norm_map)).resize(image.size, Image.Resampling.BILINEAR)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        # zlib level 1: a fifth of the default level's time for files about a fifth larger
        Image.blend(image.convert("RGB"), heat, 0.45).save(tmp, format="PNG", compress_level=1)
    return out
