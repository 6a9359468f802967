"""Train (embeddings -> checkpoint + model card) and calibrate (-> infer_config.json)."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from safetensors.torch import save_file

from defectflow.backbone import BUILTIN, BUILTIN_ARCH, BackboneSpec, resolve_weights
from defectflow.backends import EMBEDDING_BACKENDS, Backend
from defectflow.config import BackboneConfig, ThresholdConfig
from defectflow.contracts import validate
from defectflow.embeddings import load_embeddings, specs
from defectflow.errors import ModelError
from defectflow.io import atomic_path, read_json, sha256_file, write_json_atomic
from defectflow.preprocess import PreprocessSpec
from defectflow.records import ModelArtifact
from defectflow.thresholds import Threshold, calibrate

log = logging.getLogger(__name__)


class ModelCard(ModelArtifact):
    """``model_card.json`` beside each checkpoint."""

    backend: str
    params: dict[str, Any]
    n_train: int
    fit_seconds: float
    facts: dict[str, Any] = Field(description="backend facts: memory bank size, dimensions, ...")
    backbone: dict[str, Any]
    weights_sha256: str
    seed: int


class FileRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(
        description="relative to infer_config.json; null for the builtin package weights"
    )
    source: str = Field(description="file | builtin | pretrained")
    sha256: str | None


class InferConfig(ModelArtifact):
    """``infer_config.json``: everything a deployment needs, with no run directory."""

    backend: str
    params: dict[str, Any]
    backbone: dict[str, Any] = Field(description="BackboneSpec: timm name, weights, layers, pool")
    weights: FileRef
    preprocess: dict[str, Any] = Field(description="PreprocessSpec: size, crop, normalization")
    checkpoint: FileRef
    threshold: Threshold
    map_sigma: float
    seed: int
    versions: dict[str, str]
    created_at: str

    @property
    def model_id(self) -> str:
        return f"{self.dataset}/{self.category}/{self.model}@{(self.checkpoint.sha256 or '')[:12]}"


def library_versions() -> dict[str, str]:
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
    }


def build_backend(backend: str, params: dict[str, Any]) -> Backend:
    try:
        return EMBEDDING_BACKENDS[backend](params)
    except KeyError:
        raise ModelError(
            f"unknown embedding backend {backend!r}; known: {sorted(EMBEDDING_BACKENDS)}"
        ) from None


META_KEY = "defectflow"


def save_checkpoint(backend: Backend, path: str | Path, meta: dict[str, Any]) -> None:
    """Tensors only (safetensors). Metadata is one sorted-JSON entry so the bytes reproduce
    (safetensors writes several metadata keys in random order)."""
    tensors = {k: v.contiguous() for k, v in backend.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def read_safetensors_meta(path: str | Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if META_KEY not in meta:
        raise ModelError(
            f"{path} is not a defectflow file (no {META_KEY!r} metadata); re-run the rule that makes it"
        )
    return json.loads(meta[META_KEY])


def load_checkpoint(path: str | Path) -> Backend:
    from safetensors.torch import load_file

    meta = read_safetensors_meta(path)
    backend = build_backend(meta["backend"], meta["params"])
    backend.load_state_dict(load_file(str(path)))
    return backend


def _select(emb: dict[str, Any], split: str) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    idx = [i for i, s in enumerate(emb["splits"]) if s == split]
    return idx, emb["patch"][idx], emb["image"][idx]


def run_train(patch_files: list[str], image_files: list[str], dataset: str, category: str, model: str, model_cfg: dict[str, Any],
              out_ckpt: str | Path, out_card: str | Path, seed: int = 0, threads: int = 1) -> ModelCard:  # fmt: skip
    """Snakemake entry point: stored embeddings (train split) -> checkpoint + model card."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    params = {k: v for k, v in model_cfg.items() if k != "backend"}
    backend = build_backend(model_cfg["backend"], params)
    emb = load_embeddings(patch_files, image_files)
    idx, patch, image = _select(emb, "train")
    if not idx:
        raise ModelError(f"{dataset}/{category}: no train images in the embeddings")
    t = time.perf_counter()
    facts = backend.fit(patch if backend.uses_patches else None, image, seed=seed)
    dt = time.perf_counter() - t
    save_checkpoint(backend, out_ckpt, {"backend": backend.name, "params": params})
    card = ModelCard(dataset=dataset, category=category, model=model, backend=backend.name, params=params, n_train=len(idx),
                     fit_seconds=round(dt, 3), facts=facts, backbone=emb["backbone"], weights_sha256=emb["weights_sha256"], seed=seed)  # fmt: skip
    data = card.model_dump(mode="json")
    validate("model_card", data, where=str(out_card))
    write_json_atomic(out_card, data)
    log.info(
        "%s/%s/%s: fitted on %d images in %.2f s: %s", dataset, category, model, len(idx), dt, facts
    )
    return card


def anomalib_norm(init: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Normalization for an anomalib model: 0.5/0.5 for the builtin lite0 weights, ImageNet otherwise."""
    from defectflow.backends.anomalib_backend import IMAGENET

    return ([0.5] * 3, [0.5] * 3) if init.get("backbone") == BUILTIN_ARCH else IMAGENET


def run_train_anomalib(table: str | Path, dataset: str, category: str, model: str, model_cfg: dict[str, Any], image_size: int,
                       out_ckpt: str | Path, out_card: str | Path, seed: int = 0, threads: int = 1) -> ModelCard:  # fmt: skip
    """The ``anomalib`` backend: train images -> safetensors state + model card."""
    from defectflow.backends.anomalib_backend import save_anomalib, train_anomalib
    from defectflow.standardize import read_standardized

    params = {k: v for k, v in model_cfg.items() if k != "backend"}
    paths = [
        r["image_path"]
        for r in read_standardized(table)
        if r["category"] == category and r["split"] == "train"
    ]
    if not paths:
        raise ModelError(f"{dataset}/{category}: no train images")
    init = params.get("init", {})
    mean, std = anomalib_norm(init)
    torch.set_num_threads(threads)
    module, facts = train_anomalib(paths, params["model"], init, image_size, mean, std,
                                   max_epochs=params.get("max_epochs", 1), batch_size=params.get("batch_size", 8), seed=seed)  # fmt: skip
    save_anomalib(
        module,
        out_ckpt,
        {
            "backend": "anomalib",
            "params": params,
            "image_size": image_size,
            "mean": mean,
            "std": std,
        },
    )
    card = ModelCard(dataset=dataset, category=category, model=model, backend="anomalib", params=params, n_train=len(paths),
                     fit_seconds=facts["fit_seconds"], facts=facts, backbone=init, weights_sha256="", seed=seed)  # fmt: skip
    data = card.model_dump(mode="json")
    validate("model_card", data, where=str(out_card))
    write_json_atomic(out_card, data)
    log.info(
        "%s/%s/%s: anomalib %s fitted on %d images in %.2f s",
        dataset,
        category,
        model,
        params["model"],
        len(paths),
        facts["fit_seconds"],
    )
    return card


def run_train_rule(inputs: Any, dataset: str, category: str, model: str, model_cfg: dict[str, Any], image_size: int,
                   out_ckpt: str | Path, out_card: str | Path, seed: int = 0, threads: int = 1) -> ModelCard:  # fmt: skip
    """The train rule: embedding backends fit on stored features, ``anomalib`` trains from images."""
    if model_cfg["backend"] == "anomalib":
        return run_train_anomalib(
            inputs.table,
            dataset,
            category,
            model,
            model_cfg,
            image_size,
            out_ckpt,
            out_card,
            seed,
            threads,
        )
    return run_train(
        list(inputs.patches),
        list(inputs.images),
        dataset,
        category,
        model,
        model_cfg,
        out_ckpt,
        out_card,
        seed,
        threads,
    )


def _val_scores(ckpt: str | Path, meta: dict[str, Any], patch_files: list[str], image_files: list[str], rows: list[dict[str, Any]],
                category: str) -> tuple[list[str], np.ndarray, str, dict[str, Any]]:  # fmt: skip
    """Raw scores of the val images: from stored embeddings, or from the images for anomalib."""
    if meta["backend"] == "anomalib":
        from defectflow.backends.anomalib_backend import load_anomalib
        from defectflow.preprocess import load_rgb

        runner = load_anomalib(ckpt, meta)
        val = [r for r in rows if r["category"] == category and r["split"] == "val"]
        parts = [
            runner.score_images([load_rgb(r["image_path"]) for r in val[i : i + 8]])[0].numpy()
            for i in range(0, len(val), 8)
        ]
        return (
            [r["image_id"] for r in val],
            np.concatenate(parts) if parts else np.zeros(0),
            "anomalib",
            meta["params"],
        )
    backend = load_checkpoint(ckpt)
    emb = load_embeddings(patch_files, image_files)
    idx, patch, image = _select(emb, "val")
    scores = (
        backend.score(patch if backend.uses_patches else None, image)[0].numpy()
        if idx
        else np.zeros(0)
    )
    return [emb["ids"][i] for i in idx], scores, backend.name, backend.params


def run_calibrate(ckpt: str | Path, patch_files: list[str], image_files: list[str], table: str | Path, dataset: str, category: str,
                  model: str, backbone_cfg: dict[str, Any], threshold_cfg: dict[str, Any], out: str | Path, seed: int = 0) -> InferConfig:  # fmt: skip
    """Snakemake entry point: checkpoint + val scores -> ``infer_config.json``."""
    from defectflow.standardize import read_standardized

    bcfg = BackboneConfig.model_validate(backbone_cfg)
    tcfg = ThresholdConfig.model_validate(threshold_cfg)
    meta = read_safetensors_meta(ckpt)
    rows = read_standardized(table)
    ids, scores, backend_name, params = _val_scores(
        ckpt, meta, patch_files, image_files, rows, category
    )
    if not ids and tcfg.policy != "fixed":
        raise ModelError(
            f"{dataset}/{category}: no val images to calibrate a threshold on; set split.val_fraction > 0"
        )
    labels_by_id = {r["image_id"]: r["label"] for r in rows}
    thr = calibrate(scores, [labels_by_id.get(i) for i in ids], ids, tcfg)
    log.info(
        "%s/%s/%s: threshold %.5g (%s) from %d normal, %d anomalous val images",
        dataset,
        category,
        model,
        thr.value,
        thr.policy,
        thr.n_normal,
        thr.n_anomaly,
    )
    bb, pp = specs(bcfg)
    if backend_name == "anomalib":
        init = params.get("init", {})
        bb = BackboneSpec(
            name=init.get("backbone", "resnet18"),
            weights=BUILTIN if init.get("backbone") == BUILTIN_ARCH else "pretrained",
        )
        pp = PreprocessSpec(image_size=meta["image_size"], mean=meta["mean"], std=meta["std"])
    out = Path(out)
    weights = resolve_weights(bb)
    if weights is None:
        wref = FileRef(path=None, source="pretrained", sha256=None)
    elif bb.weights == BUILTIN:
        wref = FileRef(path=None, source="builtin", sha256=sha256_file(weights))
    else:
        local = out.parent / weights.name
        if not local.exists() or sha256_file(local) != sha256_file(weights):
            shutil.copyfile(weights, local)
        wref = FileRef(path=local.name, source="file", sha256=sha256_file(local))
    ckpt = Path(ckpt)
    cfg = InferConfig(
        dataset=dataset, category=category, model=model, backend=backend_name, params=params,
        backbone=bb.model_dump(), weights=wref, preprocess=pp.model_dump(),
        checkpoint=FileRef(path=str(ckpt.resolve().relative_to(out.parent.resolve())), source="file", sha256=sha256_file(ckpt)),
        threshold=thr, map_sigma=tcfg.map_sigma, seed=seed, versions=library_versions(),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )  # fmt: skip
    write_infer_config(cfg, out)
    return cfg


def write_infer_config(cfg: InferConfig, path: str | Path) -> None:
    data = cfg.model_dump(mode="json")
    validate("infer_config", data, where=str(path))
    write_json_atomic(path, data)


def read_infer_config(path: str | Path) -> InferConfig:
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ModelError(f"infer config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not JSON: {exc}") from None
    validate("infer_config", data, where=str(path))
    return InferConfig.model_validate(data)


__all__ = [
    "BackboneSpec",
    "InferConfig",
    "ModelCard",
    "PreprocessSpec",
    "read_infer_config",
    "run_calibrate",
    "run_train",
]
