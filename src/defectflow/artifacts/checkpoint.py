"""``checkpoint.safetensors`` (a fitted backend: arrays only, no pickle) and ``model_card.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from defectflow import device
from defectflow.contracts import write_json_artifact
from defectflow.errors import ModelError
from defectflow.io import atomic_path
from defectflow.models.backends import build
from defectflow.records import ModelArtifact

META_KEY = "defectflow"


class ModelCard(ModelArtifact):
    """``model_card.json`` beside each checkpoint. No timings: a rerun writes the same bytes
    (times are in the job's log and ``benchmarks/``)."""

    backend: str
    params: dict[str, Any]
    n_train: int
    device: str = Field(default="cpu", description="where it was fitted: cpu or cuda")
    crossfit: dict[str, Any] = Field(
        default_factory=dict,
        description="folds, images scored out of fold, how fold models were made",
    )
    facts: dict[str, Any] = Field(description="backend facts: memory bank size, dimensions, ...")
    backbone: dict[str, Any]
    seed: int


def write_model_card(card: ModelCard, path: str | Path) -> None:
    write_json_artifact("model_card", card, path)


def save_checkpoint(backend: Any, path: str | Path) -> None:
    """Arrays only. Metadata is one sorted-JSON entry so the bytes reproduce (safetensors writes
    several metadata keys in random order)."""

    meta = {
        "params": backend.params.model_dump(mode="json"),
        "extra": backend.extra_meta(),
        "device": device.current(),
    }
    arrays = {k: np.ascontiguousarray(v) for k, v in backend.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata() or {}
    if META_KEY not in meta:
        raise ModelError(
            f"{path} is not a defectflow checkpoint (no {META_KEY!r} metadata); re-run its train rule"
        )
    return json.loads(meta[META_KEY])


def load_checkpoint(path: str | Path) -> Any:
    """Rebuild the backend a checkpoint holds (through the registry)."""

    meta = checkpoint_meta(path)
    backend = build(meta["params"])
    backend.set_meta(meta.get("extra", {}))
    backend.load_state_dict(load_file(str(path)))
    return backend
