"""Embedding stage: a category's images (every split) -> stored backbone features, computed once
and reused by every model's fitting, cross-fitting and scoring."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from defectflow import device as dev
from defectflow.artifacts.backbone import read_backbone_card
from defectflow.artifacts.embeddings import write_shard
from defectflow.artifacts.standardized import category_rows
from defectflow.errors import ModelError
from defectflow.features.onnx_runtime import OnnxBackbone
from defectflow.features.preprocess import PreprocessSpec, preprocess
from defectflow.features.torch_runtime import make_backbone
from defectflow.progress import Progress
from defectflow.sharding import shard_rows

log = logging.getLogger(__name__)


def extract(
    backbone: OnnxBackbone,
    paths: list[str],
    pp: PreprocessSpec,
    batch_size: int,
    desc: str = "embed",
) -> tuple[np.ndarray, np.ndarray]:
    """Features of image files, batched with progress; the next batch is decoded on a thread
    while the network runs on the current one (PIL releases the GIL)."""

    def load(start: int) -> np.ndarray:
        return np.stack([preprocess(p, pp) for p in paths[start : start + batch_size]])

    patches, images = [], []
    starts = list(range(0, len(paths), batch_size))
    bar = Progress(len(paths), desc)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, starts[0]) if starts else None
        for k in range(len(starts)):
            batch = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(load, starts[k + 1]) if k + 1 < len(starts) else None
            p, i = backbone(batch)
            patches.append(p)
            images.append(i)
            bar.update(len(p))
    if not patches:
        return np.zeros((0, 0, 0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(patches), np.concatenate(images)


def embed_files(
    paths: list[str],
    backbone_onnx: str | Path,
    backbone_card: str | Path,
    *,
    desc: str,
    threads: int = 1,
    batch_size: int = 16,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image files through the exported backbone: (patch features, image embeddings, the
    shard metadata that says what made them)."""
    card = read_backbone_card(backbone_card)
    pp = PreprocessSpec.model_validate(card.preprocess)
    where = dev.use(device)
    backbone = make_backbone(str(backbone_onnx), card.spec, card.weights_sha256, where, threads)
    patch, image = extract(backbone, paths, pp, batch_size, desc=desc)
    meta = {
        "backbone_onnx_sha256": card.onnx_sha256,
        "preprocess": card.preprocess,
        "backbone": card.spec,
        "weights_sha256": card.weights_sha256,
        "device": where,
    }
    return patch, image, meta


def run_embed(
    table: str | Path,
    backbone_onnx: str | Path,
    backbone_card: str | Path,
    *,
    category: str,
    shard: int,
    n_shards: int,
    out_patches: str | Path,
    out_images: str | Path,
    threads: int = 1,
    batch_size: int = 16,
    device: str = "cpu",
) -> int:
    """Snakemake entry point: one shard of one category's images (all splits) -> stored features."""
    rows = shard_rows(category_rows(table, category), shard, n_shards)
    if not rows:
        raise ModelError(f"category {category!r} shard {shard} of {n_shards} has no images")
    t = time.perf_counter()
    patch, image, meta = embed_files(
        [r["image_path"] for r in rows],
        backbone_onnx,
        backbone_card,
        desc=f"embed {category} {shard + 1}/{n_shards}",
        threads=threads,
        batch_size=batch_size,
        device=device,
    )
    dt = time.perf_counter() - t
    write_shard(patch, image, rows, meta, out_patches, out_images)
    log.info(
        "%s shard %d/%d: %d images in %.1f s (%.1f img/s), patch features %s",
        category,
        shard + 1,
        n_shards,
        len(rows),
        dt,
        len(rows) / dt,
        tuple(patch.shape),
    )
    return len(rows)
