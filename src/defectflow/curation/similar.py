"""Similarity search over the stored image embeddings (no FiftyOne needed): the query image goes
through the same ONNX backbone and preprocessing the embeddings were made with, and the nearest
stored images by cosine distance come back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from defectflow.artifacts.backbone import read_backbone_card
from defectflow.artifacts.embeddings import shard_meta
from defectflow.artifacts.standardized import read_standardized
from defectflow.errors import DefectflowError
from defectflow.features.embeddings import extract
from defectflow.features.onnx_runtime import OnnxBackbone
from defectflow.features.preprocess import PreprocessSpec
from defectflow.tables import read_parquet


def _backbone_for(results: Path, onnx_sha256: str) -> tuple[Path, Any]:
    for card_path in sorted((results / "backbones").glob("*/backbone.json")):
        card = read_backbone_card(card_path)
        if card.onnx_sha256 == onnx_sha256:
            return card_path.parent / "backbone.onnx", card
    raise DefectflowError(
        f"the backbone the embeddings were made with (ONNX sha256 {onnx_sha256[:12]}) is not "
        f"under {results / 'backbones'}; re-run the workflow"
    )


def find_similar(
    image: str | Path,
    dataset: str,
    results: str | Path = "results",
    *,
    category: str | None = None,
    k: int = 10,
    threads: int = 2,
    backbone: str | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` stored images nearest to ``image`` (all splits), nearest first. ``backbone``:
    which backbone's embeddings (``results/{dataset}/embeddings/{backbone}``); needed only when
    a sweep made several."""

    results = Path(results)
    base = results / dataset / "embeddings"
    made = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not made:
        raise DefectflowError(
            f"no embeddings for dataset {dataset!r} under {base}; run the workflow first"
        )
    if backbone is None and len(made) > 1:
        raise DefectflowError(
            f"dataset {dataset!r} has embeddings of {len(made)} backbones; choose one with "
            f"--backbone: {', '.join(made)}"
        )
    if backbone is not None and backbone not in made:
        raise DefectflowError(
            f"no embeddings of backbone {backbone!r} for dataset {dataset!r}; known: {made}"
        )
    root = base / (backbone or made[0])
    cats = [category] if category else sorted(p.name for p in root.iterdir() if p.is_dir())
    shards = [f for c in cats for f in sorted((root / c).glob("shard-*.safetensors"))]
    if not shards:
        known = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DefectflowError(
            f"no embeddings for category {category!r} of {dataset!r}; known: {known}"
        )
    if not Path(image).is_file():
        raise DefectflowError(f"{image} is not a file")
    ids, vecs, sha = [], [], None
    for f in shards:
        meta = shard_meta(f)
        sha = sha or meta["backbone_onnx_sha256"]
        if meta["backbone_onnx_sha256"] != sha:
            raise DefectflowError(f"{f} was embedded with another backbone; re-run the workflow")
        t = read_parquet(f.with_suffix(".parquet"), columns=["image_id", "embedding"])
        ids += t["image_id"].to_pylist()
        vecs.append(np.stack(t["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32))
    onnx, card = _backbone_for(results, sha)
    try:
        _, q = extract(
            OnnxBackbone(onnx, threads=threads),
            [str(image)],
            PreprocessSpec.model_validate(card.preprocess),
            1,
            desc="embed query",
        )
    except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for a broken file
        raise DefectflowError(
            f"{image}: cannot be read as an image ({exc}); is it truncated or of another format?"
        ) from None
    bank = np.concatenate(vecs)
    bank_n = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    qn = q[0] / max(float(np.linalg.norm(q[0])), 1e-12)
    dist = 1.0 - bank_n @ qn
    order = np.argsort(dist, kind="stable")[:k]
    rows = {r["image_id"]: r for r in read_standardized(results / dataset / "standardized.parquet")}
    out = []
    for rank, i in enumerate(order, 1):
        r = rows.get(ids[i], {})
        out.append(
            {
                "rank": rank,
                "image_id": ids[i],
                "distance": round(float(dist[i]), 6),
                "category": r.get("category"),
                "split": r.get("split"),
                "label": r.get("label"),
                "defect_type": r.get("defect_type"),
                "image_path": r.get("image_path"),
            }
        )
    return out
