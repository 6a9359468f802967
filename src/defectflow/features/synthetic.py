"""Seeded synthetic defects made from a category's training good images: a yardstick for
choosing and for stating what share of defects a threshold catches when no real defect is
labelled.

Families of what lines see, each generic (no shape of the demo's generators): ``cutpaste``
(a patch of another good image pasted elsewhere, CutPaste), ``scratch`` (thin bright or dark
polylines), ``stain`` (a soft blob shifting intensity and colour), ``texture`` (a noise-shaped
region blended with another good image's texture, as DRAEM does), ``blur`` (local blur: a
smeared or out-of-focus spot) and ``missing`` (a region filled with its surroundings' mean:
missing material). Each at two strengths. Every synthetic image comes from one training image
(its ``source``) and is scored only by models that did not see that image (leave-one-out).

The images go through the backbone once, here, and are stored like every other image's features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from defectflow.artifacts.embeddings import write_shard
from defectflow.artifacts.standardized import category_rows
from defectflow.features.embeddings import embed_files
from defectflow.io import atomic_path

log = logging.getLogger(__name__)

FAMILIES = ("cutpaste", "scratch", "stain", "texture", "blur", "missing")
STRENGTHS = (0.5, 1.0)


def _rng(seed: int, *keys: Any) -> np.random.Generator:
    h = hashlib.sha256(":".join(map(str, (seed, *keys))).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _region(rng: np.random.Generator, w: int, h: int, area: float) -> tuple[int, int, int, int]:
    """A box of about ``area`` of the image, of random aspect, inside it."""
    aspect = float(np.exp(rng.uniform(np.log(0.4), np.log(2.5))))
    bw = int(np.clip(np.sqrt(area * w * h * aspect), 4, w - 2))
    bh = int(np.clip(area * w * h / bw, 4, h - 2))
    x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
    return x0, y0, x0 + bw, y0 + bh


def _soft(mask: Image.Image, radius: float) -> np.ndarray:
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0


def _noise_mask(rng: np.random.Generator, w: int, h: int, cover: float) -> np.ndarray:
    """Smooth value noise (a coarse random grid, bicubic-upsampled) cut at the level that
    leaves about ``cover`` of the image inside: blob-like regions of random shape."""
    cells = int(rng.integers(3, 8))
    grid = rng.random((cells, cells)).astype(np.float32)
    up = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))
    return (up >= np.quantile(up, 1 - cover)).astype(np.float32)


def make_defect(
    img: Image.Image, donor: Image.Image, family: str, strength: float, rng: np.random.Generator
) -> tuple[Image.Image, Image.Image]:
    """One synthetic defect on ``img`` (``donor``: another good image of the category) ->
    (defective image, its binary mask ``L``). The image keeps its mode and size."""
    mode = img.mode
    base = img.convert("RGB")
    w, h = base.size
    x = np.asarray(base, np.float32)
    mask = Image.new("L", (w, h), 0)
    area = (0.01 + 0.03 * rng.random()) * (0.5 + strength)
    if family == "cutpaste":
        x0, y0, x1, y1 = _region(rng, w, h, area)
        d = donor.convert("RGB").resize((w, h))
        dx0, dy0 = int(rng.integers(0, w - (x1 - x0) + 1)), int(rng.integers(0, h - (y1 - y0) + 1))
        patch = d.crop((dx0, dy0, dx0 + x1 - x0, dy0 + y1 - y0))
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.ROTATE_90).resize((x1 - x0, y1 - y0))
        ImageDraw.Draw(mask).rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
        alpha = np.asarray(mask, np.float32)[..., None] / 255.0
        canvas = np.array(base, np.float32)
        canvas[y0:y1, x0:x1] = np.asarray(patch, np.float32)
        y = x * (1 - alpha) + canvas * alpha
    elif family == "scratch":
        draw = ImageDraw.Draw(mask)
        width = max(1, int(round(min(w, h) * (0.006 + 0.008 * strength))))
        for _ in range(int(rng.integers(1, 3))):
            pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h)))]
            for _ in range(int(rng.integers(2, 5))):
                step = min(w, h) * (0.1 + 0.2 * rng.random())
                a = rng.uniform(0, 2 * np.pi)
                pts.append((pts[-1][0] + step * np.cos(a), pts[-1][1] + step * np.sin(a)))
            draw.line(pts, fill=255, width=width)
        alpha = _soft(mask, 0.5)[..., None]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        y = np.clip(x + sign * alpha * (60 + 100 * strength), 0, 255)
    elif family == "stain":
        x0, y0, x1, y1 = _region(rng, w, h, area * 1.5)
        ImageDraw.Draw(mask).ellipse((x0, y0, x1, y1), fill=255)
        alpha = _soft(mask, max(2.0, 0.15 * min(x1 - x0, y1 - y0)))[..., None]
        tint = rng.uniform(0.4, 1.6, size=3).astype(np.float32)
        gain = 1 + (tint - 1) * (0.5 + strength) / 1.5
        shift = rng.choice([-1.0, 1.0]) * (20 + 40 * strength)
        y = np.clip(x * (1 - alpha) + (x * gain + shift) * alpha, 0, 255)
    elif family == "texture":
        m = _noise_mask(rng, w, h, min(0.5, area * 2))
        mask = Image.fromarray((m * 255).astype(np.uint8))
        d = np.asarray(donor.convert("RGB").resize((w, h)), np.float32)
        d = np.roll(d, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))[:, ::-1]
        beta = 0.3 + 0.5 * strength
        alpha = _soft(mask, 1.0)[..., None] * beta
        y = x * (1 - alpha) + d * alpha
    elif family == "blur":
        x0, y0, x1, y1 = _region(rng, w, h, area * 1.5)
        ImageDraw.Draw(mask).ellipse((x0, y0, x1, y1), fill=255)
        radius = max(1.5, min(w, h) * (0.01 + 0.02 * strength))
        blurred = np.asarray(base.filter(ImageFilter.GaussianBlur(radius)), np.float32)
        alpha = _soft(mask, 2.0)[..., None]
        y = x * (1 - alpha) + blurred * alpha
    elif family == "missing":
        x0, y0, x1, y1 = _region(rng, w, h, area)
        ImageDraw.Draw(mask).rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
        ring = x[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3].reshape(-1, 3).mean(0)
        alpha = _soft(mask, 1.0)[..., None] * (0.6 + 0.4 * strength)
        y = x * (1 - alpha) + ring * alpha
    else:
        raise ValueError(f"unknown synthetic defect family {family!r}; known: {FAMILIES}")
    out = Image.fromarray(np.clip(np.rint(y), 0, 255).astype(np.uint8), "RGB")
    binary = mask.point(lambda v: 255 if v >= 128 else 0)
    return (out.convert(mode) if mode in ("L", "RGB") else out), binary


def plan(rows: list[dict[str, Any]], per_image: int, max_images: int, seed: int) -> list[dict]:
    """Which synthetic defects to make: ``per_image`` from each training good image (families
    dealt round-robin in a seeded order so every family is about equally frequent), at most
    ``max_images`` in all (sources in a seeded order)."""
    order = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r['image_id']}".encode()).digest())
    out = []
    for k in range(per_image):
        for j, r in enumerate(order):
            n = len(out)
            if n >= max_images:
                return out
            fam = FAMILIES[(j * per_image + k) % len(FAMILIES)]
            strength = STRENGTHS[(j + k) % len(STRENGTHS)]
            out.append(
                {
                    "image_id": f"syn-{r['image_id']}-{k}",
                    "source_id": r["image_id"],
                    "source_path": r["image_path"],
                    "family": fam,
                    "strength": strength,
                    "donor_path": order[(j + 1 + k) % len(order)]["image_path"],
                }
            )
    return out


def run_synthetic(
    table: str | Path,
    backbone_onnx: str | Path,
    backbone_card: str | Path,
    *,
    category: str,
    out_dir: str | Path,
    out_patches: str | Path,
    out_images: str | Path,
    per_image: int = 2,
    max_images: int = 400,
    seed: int = 0,
    threads: int = 1,
    batch_size: int = 16,
    device: str = "cpu",
) -> int:
    """Snakemake entry point: synthetic defects of the category's fitted good images -> their
    images and masks in ``out_dir`` (with ``synthetic.jsonl``: source, family, strength) and
    their backbone features, stored as an embedding shard (split ``synthetic``)."""
    src = [r for r in category_rows(table, category, ("train",)) if r["label"] != "anomaly"]
    todo = plan(src, per_image, max_images, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for t in todo:
        rng = _rng(seed, t["image_id"])
        with Image.open(t["source_path"]) as im, Image.open(t["donor_path"]) as dn:
            im.load()
            dn.load()
            img, mask = make_defect(im, dn, t["family"], t["strength"], rng)
        ipath, mpath = out_dir / f"{t['image_id']}.png", out_dir / f"{t['image_id']}_mask.png"
        with atomic_path(ipath) as tmp:
            img.save(tmp, format="PNG")
        with atomic_path(mpath) as tmp:
            mask.save(tmp, format="PNG")
        made.append({**t, "image_path": str(ipath), "mask_path": str(mpath)})
    with atomic_path(out_dir / "synthetic.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in made))
    t0 = time.perf_counter()
    patch, image, meta = embed_files(
        [m["image_path"] for m in made],
        backbone_onnx,
        backbone_card,
        desc=f"synthetic {category}",
        threads=threads,
        batch_size=batch_size,
        device=device,
    )
    rows = [{"image_id": m["image_id"], "split": "synthetic", "label": "anomaly"} for m in made]
    meta["synthetic"] = [
        {k: m[k] for k in ("image_id", "source_id", "family", "strength")} for m in made
    ]
    write_shard(patch, image, rows, meta, out_patches, out_images)
    log.info(
        "%s: %d synthetic defects from %d good images (%s) embedded in %.1f s",
        category,
        len(made),
        len(src),
        ", ".join(f"{f} {sum(m['family'] == f for m in made)}" for f in FAMILIES),
        time.perf_counter() - t0,
    )
    return len(made)
