"""Anomaly-detection backends fitted on stored embeddings (plus an anomalib wrapper)."""

from __future__ import annotations

from defectflow.backends.base import Backend
from defectflow.backends.knn import KnnBackend
from defectflow.backends.padim import PadimBackend
from defectflow.backends.patchcore import PatchcoreBackend

EMBEDDING_BACKENDS: dict[str, type[Backend]] = {
    "knn": KnnBackend,
    "patchcore": PatchcoreBackend,
    "padim": PadimBackend,
}

__all__ = ["EMBEDDING_BACKENDS", "Backend"]
