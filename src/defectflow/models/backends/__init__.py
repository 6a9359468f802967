"""The backend registry: one entry per backend, with its typed params, what it consumes, whether
it makes anomaly maps and can export ONNX, and where its implementation lives (imported only
when a backend is used, so parsing the config costs no torch/anomalib import)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from defectflow.errors import ModelError
from defectflow.models.backends.params import (
    AnomalibParams,
    BackendParams,
    CombinedParams,
    KnnParams,
    PadimParams,
    PatchcoreParams,
)

if TYPE_CHECKING:
    from defectflow.models.backends.base import Backend


@dataclass(frozen=True)
class BackendEntry:
    name: str
    params: type[BackendParams]
    impl: str  # "module:Class"
    consumes: Literal["features", "images"]
    maps: bool  # makes anomaly maps
    onnx: bool  # scoring can be exported as one ONNX graph with the backbone
    patches: bool = True  # reads the stored patch features (else the image embeddings only)
    members: bool = False  # fitted from other models' checkpoints and out-of-sample scores

    def load(self) -> type[Backend]:
        module, cls = self.impl.split(":")
        return getattr(importlib.import_module(module), cls)


REGISTRY: dict[str, BackendEntry] = {
    e.name: e
    for e in (
        BackendEntry(
            "knn",
            KnnParams,
            "defectflow.models.backends.knn:KnnBackend",
            "features",
            False,
            True,
            patches=False,
        ),
        BackendEntry(
            "patchcore",
            PatchcoreParams,
            "defectflow.models.backends.patchcore:PatchcoreBackend",
            "features",
            True,
            True,
        ),
        BackendEntry(
            "padim",
            PadimParams,
            "defectflow.models.backends.padim:PadimBackend",
            "features",
            True,
            True,
        ),
        BackendEntry(
            "combined",
            CombinedParams,
            "defectflow.models.backends.combined:CombinedBackend",
            "features",
            True,
            False,
            members=True,
        ),
        BackendEntry(
            "anomalib",
            AnomalibParams,
            "defectflow.models.backends.anomalib:AnomalibBackend",
            "images",
            True,
            False,
        ),
    )
}


def entry(name: str) -> BackendEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown backend {name!r}; known: {sorted(REGISTRY)}") from None


def build(params: BackendParams | dict) -> Backend:
    """A backend instance from its params (a params model or its dumped dict)."""
    if isinstance(params, dict):
        e = entry(params.get("backend", ""))
        params = e.params.model_validate(params)
    return entry(params.backend).load()(params)  # type: ignore[attr-defined]


__all__ = ["REGISTRY", "BackendEntry", "BackendParams", "build", "entry"]
