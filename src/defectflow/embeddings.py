"""Embedding stage: standardized images -> stored backbone features, computed once per
dataset x category x backbone and reused by every model.

Patch features go to ``shard-XXX.safetensors`` (float16 ``[N, C, H, W]``, image ids in the
metadata); pooled image embeddings to ``shard-XXX.parquet`` keyed by ``image_id``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from defectflow.backbone import BackboneSpec, FeatureExtractor, build_extractor, default_mean_std
from defectflow.config import BackboneConfig
from defectflow.errors import ModelError
from defectflow.io import atomic_path
from defectflow.preprocess import PreprocessSpec, preprocess
from defectflow.sharding import fit_rows, shard_rows

log = logging.getLogger(__name__)


def specs(cfg: BackboneConfig) -> tuple[BackboneSpec, PreprocessSpec]:
    """Backbone and preprocessing specs of a backbone config."""
    bb = BackboneSpec(name=cfg.name, weights=cfg.weights, layers=cfg.layers, pool=cfg.pool)
    mean, std = default_mean_std(bb)
    pp = PreprocessSpec(image_size=cfg.image_size, center_crop=cfg.center_crop, mean=mean, std=std)
    return bb, pp


def features(model: FeatureExtractor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: patch features rounded to float16 (the stored precision), image
    embeddings in float32. Embedding and inference both call this."""
    p, i = model(batch)
    return p.to(torch.float16), i.float()


def extract(
    model: FeatureExtractor,
    paths: list[str],
    pp: PreprocessSpec,
    batch_size: int,
    desc: str = "embed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of image files, batched with progress. The next batch is decoded and resized on a
    thread while the network runs on the current one (PIL releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def load(start: int) -> torch.Tensor:
        return torch.stack([preprocess(p, pp) for p in paths[start : start + batch_size]])

    patches, images = [], []
    starts = list(range(0, len(paths), batch_size))
    bar = tqdm(total=len(paths), desc=desc, unit="img", mininterval=5.0, disable=len(paths) < 64)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, starts[0]) if starts else None
        for k in range(len(starts)):
            batch = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(load, starts[k + 1]) if k + 1 < len(starts) else None
            p, i = features(model, batch)
            patches.append(p)
            images.append(i)
            bar.update(len(p))
    bar.close()
    if not patches:
        return torch.empty(0), torch.empty(0)
    return torch.cat(patches), torch.cat(images)


def run_embed(
    table: str | Path,
    category: str,
    shard: int,
    cfg: dict[str, Any] | BackboneConfig,
    out_patches: str | Path,
    out_images: str | Path,
    threads: int = 1,
) -> int:
    """Snakemake entry point: one shard of one category's train+val images -> stored features."""
    from defectflow.standardize import read_standardized

    cfg = cfg if isinstance(cfg, BackboneConfig) else BackboneConfig.model_validate(cfg)
    torch.set_num_threads(threads)
    rows = shard_rows(fit_rows(read_standardized(table), category), shard, cfg.shard_size)
    if not rows:
        raise ModelError(f"category {category!r} shard {shard} has no train/val images")
    bb, pp = specs(cfg)
    model, sha = build_extractor(bb)
    t = time.perf_counter()
    patch, image = extract(
        model, [r["image_path"] for r in rows], pp, cfg.batch_size, desc=f"embed {category}#{shard}"
    )
    dt = time.perf_counter() - t
    meta = {
        "image_ids": [r["image_id"] for r in rows],
        "splits": [r["split"] for r in rows],
        "backbone": bb.model_dump(),
        "preprocess": pp.model_dump(),
        "weights_sha256": sha or "",
    }
    with atomic_path(out_patches) as tmp:
        save_file(
            {"patch": patch.contiguous()},
            str(tmp),
            metadata={"defectflow": json.dumps(meta, sort_keys=True)},
        )
    tbl = pa.table(
        {
            "image_id": pa.array([r["image_id"] for r in rows], pa.string()),
            "split": pa.array([r["split"] for r in rows], pa.string()),
            "label": pa.array([r["label"] for r in rows], pa.string()),
            "embedding": pa.array(image.numpy().tolist(), pa.list_(pa.float32())),
        }
    )
    with atomic_path(out_images) as tmp:
        pq.write_table(tbl, tmp)
    log.info(
        "%s shard %d: %d images in %.1f s (%.1f img/s), patch features %s",
        category,
        shard,
        len(rows),
        dt,
        len(rows) / dt,
        tuple(patch.shape),
    )
    return len(rows)


def load_embeddings(patch_files: list[str | Path], image_files: list[str | Path]) -> dict[str, Any]:
    """Concatenate shards: ids, splits, patch features [N,C,H,W] (float32), image embeddings [N,D]."""
    ids: list[str] = []
    splits: list[str] = []
    patches, images = [], []
    meta: dict[str, str] = {}
    for pf, imf in zip(sorted(map(str, patch_files)), sorted(map(str, image_files)), strict=True):
        from safetensors import safe_open

        with safe_open(pf, framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("defectflow", "{}"))
        if "image_ids" not in meta:
            raise ModelError(f"{pf} is not a defectflow embedding shard; re-run the embed rule")
        shard_ids = meta["image_ids"]
        tbl = pq.read_table(imf).to_pydict()
        if tbl["image_id"] != shard_ids:
            raise ModelError(f"{pf} and {imf} list different images; re-run the embed rule")
        ids += shard_ids
        splits += meta["splits"]
        patches.append(load_file(pf)["patch"])
        images.append(torch.tensor(np.asarray(tbl["embedding"], dtype=np.float32)))
    return {
        "ids": ids,
        "splits": splits,
        "patch": torch.cat(patches).float(),
        "image": torch.cat(images),
        "backbone": meta["backbone"],
        "preprocess": meta["preprocess"],
        "weights_sha256": meta["weights_sha256"],
    }
