"""Stored backbone features of one category, in shards: ``shard-I-of-N.safetensors`` (patch
features float16 ``[n, C, H, W]`` and image embeddings float32 ``[n, D]``, with the image ids,
splits and labels in the metadata) and ``shard-I-of-N.parquet`` (image embeddings by
``image_id``, for tools that read Parquet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.errors import ModelError
from defectflow.io import atomic_path

META_KEY = "defectflow"


def shard_name(shard: int, n_shards: int) -> str:
    return f"shard-{shard:03d}-of-{n_shards:03d}"


def write_shard(patch: np.ndarray, image: np.ndarray, rows: list[dict[str, Any]], meta: dict[str, Any],
                out_patches: str | Path, out_images: str | Path) -> None:  # fmt: skip
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import save_file

    ids = [r["image_id"] for r in rows]
    full = dict(meta, image_ids=ids, splits=[r["split"] for r in rows],
                labels=[r["label"] for r in rows])  # fmt: skip
    with atomic_path(out_patches) as tmp:
        save_file(
            {"patch": np.ascontiguousarray(patch, np.float16),
             "embedding": np.ascontiguousarray(image, np.float32)},
            str(tmp), metadata={META_KEY: json.dumps(full, sort_keys=True)},
        )  # fmt: skip
    tbl = pa.table({
        "image_id": pa.array(ids, pa.string()),
        "split": pa.array(full["splits"], pa.string()),
        "label": pa.array(full["labels"], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(image, np.float32).ravel()), image.shape[1]),
    })  # fmt: skip
    with atomic_path(out_images) as tmp:
        pq.write_table(tbl, tmp)


def shard_meta(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        meta = json.loads((fh.metadata() or {}).get(META_KEY, "{}"))
    if "image_ids" not in meta:
        raise ModelError(f"{path} is not a defectflow embedding shard; re-run the embed rule")
    return meta


def load_features(files: list[str | Path], splits: tuple[str, ...] | None = None,
                  labels: tuple[str | None, ...] | None = None):  # fmt: skip
    """Concatenate shards, keeping rows of the given splits (and labels). Returns
    (:class:`~defectflow.backends.base.Features`, per-row splits, per-row labels, metadata)."""
    from safetensors.numpy import load_file

    from defectflow.backends.base import Features

    ids: list[str] = []
    sp: list[str] = []
    lab: list[str | None] = []
    patches, images = [], []
    meta: dict[str, Any] = {}
    for f in sorted(map(str, files)):
        meta = shard_meta(f)
        keep = [
            i for i, (s, la) in enumerate(zip(meta["splits"], meta["labels"], strict=True))
            if (splits is None or s in splits) and (labels is None or la in labels)
        ]  # fmt: skip
        if not keep:
            continue
        arrays = load_file(f)
        patches.append(arrays["patch"][keep])  # float16 as stored: backends upcast in chunks
        images.append(arrays["embedding"][keep])
        ids += [meta["image_ids"][i] for i in keep]
        sp += [meta["splits"][i] for i in keep]
        lab += [meta["labels"][i] for i in keep]
    if not patches:
        return (
            Features([], np.zeros((0, 0, 0, 0), np.float32), np.zeros((0, 0), np.float32)),
            [],
            [],
            meta,
        )
    return Features(ids, np.concatenate(patches), np.concatenate(images)), sp, lab, meta
