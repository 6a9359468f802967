"""Stored backbone features of one category, in shards: ``shard-I-of-N.safetensors`` (patch
features float16 ``[n, C, H, W]`` and image embeddings float32 ``[n, D]``, with the image ids,
splits and labels in the metadata) and ``shard-I-of-N.parquet`` (image embeddings by
``image_id``, for tools that read Parquet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from defectflow.errors import ModelError
from defectflow.io import atomic_path
from defectflow.models.backends.base import Features

META_KEY = "defectflow"


def shard_name(shard: int, n_shards: int) -> str:
    return f"shard-{shard:03d}-of-{n_shards:03d}"


def write_shard(
    patch: np.ndarray,
    image: np.ndarray,
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    out_patches: str | Path,
    out_images: str | Path,
) -> None:
    # lazy: pyarrow only where the image table is written, not where shards are read
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [r["image_id"] for r in rows]
    full = dict(
        meta, image_ids=ids, splits=[r["split"] for r in rows], labels=[r["label"] for r in rows]
    )
    with atomic_path(out_patches) as tmp:
        save_file(
            {
                "patch": np.ascontiguousarray(patch, np.float16),
                "embedding": np.ascontiguousarray(image, np.float32),
            },
            str(tmp),
            metadata={META_KEY: json.dumps(full, sort_keys=True)},
        )
    tbl = pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "split": pa.array(full["splits"], pa.string()),
            "label": pa.array(full["labels"], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(image, np.float32).ravel()), image.shape[1]
            ),
        }
    )
    with atomic_path(out_images) as tmp:
        pq.write_table(tbl, tmp)


def shard_meta(path: str | Path) -> dict[str, Any]:
    with safe_open(str(path), framework="numpy") as fh:
        meta = json.loads((fh.metadata() or {}).get(META_KEY, "{}"))
    if "image_ids" not in meta:
        raise ModelError(f"{path} is not a defectflow embedding shard; re-run the embed rule")
    return meta


def shard_shapes(path: str | Path) -> tuple[list[int], int]:
    """A shard's patch array shape ``[n, C, H, W]`` and embedding width, from its header only."""

    with safe_open(str(path), framework="numpy") as fh:
        return list(fh.get_slice("patch").get_shape()), int(
            fh.get_slice("embedding").get_shape()[1]
        )


def load_features(
    files: list[str | Path],
    splits: tuple[str, ...] | None = None,
    labels: tuple[str | None, ...] | None = None,
    ids: set[str] | None = None,
    patches: bool = True,
):
    """Concatenate shards, keeping rows of the given splits (and labels, and ``ids``). Returns
    (:class:`~defectflow.models.backends.base.Features`, per-row splits, per-row labels, metadata).

    The output arrays are allocated once from the shards' headers and filled one shard at a
    time, so memory peaks at the kept features plus one shard. ``patches=False``: the image
    embeddings only (the patch array is empty), for backends that never read patches."""

    plan: list[tuple[str, list[int], dict[str, Any]]] = []
    for f in sorted(map(str, files)):
        meta = shard_meta(f)
        keep = [
            i
            for i, (iid, s, la) in enumerate(
                zip(meta["image_ids"], meta["splits"], meta["labels"], strict=True)
            )
            if (splits is None or s in splits)
            and (labels is None or la in labels)
            and (ids is None or iid in ids)
        ]
        if keep:
            plan.append((f, keep, meta))
    n = sum(len(k) for _, k, _ in plan)
    if not n:
        empty = Features([], np.zeros((0, 0, 0, 0), np.float16), np.zeros((0, 0), np.float32))
        return empty, [], [], {}
    full, dim = shard_shapes(plan[0][0])  # every shard of one backbone has the same shapes
    shape = full[1:]
    # float16 as stored: backends upcast in chunks
    patch = np.empty((n, *shape) if patches else (n, 0, 0, 0), np.float16)
    image = np.empty((n, dim), np.float32)
    out_ids: list[str] = []
    sp: list[str] = []
    lab: list[str | None] = []
    at = 0
    for f, keep, meta in plan:
        with safe_open(f, framework="numpy") as fh:
            if patches:
                patch[at : at + len(keep)] = fh.get_tensor("patch")[keep]
            image[at : at + len(keep)] = fh.get_tensor("embedding")[keep]
        at += len(keep)
        out_ids += [meta["image_ids"][i] for i in keep]
        sp += [meta["splits"][i] for i in keep]
        lab += [meta["labels"][i] for i in keep]
    return Features(out_ids, patch, image), sp, lab, plan[-1][2]
