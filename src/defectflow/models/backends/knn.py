"""Image-level k-nearest-neighbour distance on pooled embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from defectflow.errors import ModelError
from defectflow.models.backends.base import Backend, Features, augmented_bank, knn_distances
from defectflow.models.backends.params import KnnParams


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class KnnBackend(Backend):
    name = "knn"
    params: KnnParams

    def __init__(self, params: KnnParams) -> None:
        super().__init__(params)
        self.bank = np.zeros((0, 0), np.float32)
        self._aug: np.ndarray | None = None

    def fit(self, data: Features, seed: int = 0) -> dict[str, Any]:
        if len(data) == 0:
            raise ModelError("knn needs image embeddings of at least one training image")
        self.bank = _unit(data.image)
        self._aug = None
        return {"bank_size": len(self.bank), "dim": int(self.bank.shape[1])}

    def score(self, data: Features) -> tuple[np.ndarray, None]:
        if self._aug is None:  # screened in float32, the nearest measured in float64
            self._aug = augmented_bank(self.bank)
        d, _ = knn_distances(_unit(data.image), self.bank, self.params.k, self._aug)
        return d.mean(1), None

    def loo_scores(
        self,
        data: Features,
        fold: np.ndarray,
        query: Features | None = None,
        query_fold: np.ndarray | None = None,
    ) -> np.ndarray:
        """Exact leave-one-out: each image's ``k`` nearest neighbours among the bank rows of
        other folds (the bank holds the fit data's rows in order)."""
        fold = np.asarray(fold)
        qf = fold if query is None else np.asarray(query_fold)
        if self._aug is None:
            self._aug = augmented_bank(self.bank)
        same_most = int(np.bincount(np.unique(fold, return_inverse=True)[1]).max())
        k = min(self.params.k, len(self.bank) - same_most)
        if k < 1:
            raise ModelError("knn leave-one-out needs training images in at least two groups")
        q = _unit((data if query is None else query).image)
        d, idx = knn_distances(q, self.bank, k + same_most, self._aug)
        d = np.where(fold[idx] == qf[:, None], np.inf, d)
        return np.sort(d, axis=1)[:, :k].mean(1)

    def torch_scorer(self):
        """The scoring in torch ops, for the ONNX export (parity-checked there)."""
        # lazy: torch (seconds to import) only where a network runs or is exported
        import torch

        bank, k = torch.from_numpy(self.bank), min(self.params.k, len(self.bank))

        def score(patch, image):
            q = image / image.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return torch.topk(torch.cdist(q, bank), k, largest=False).values.mean(1)

        return score

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.bank = state["bank"].astype(np.float32)
        self._aug = None
