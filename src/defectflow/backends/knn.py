"""Image-level k-nearest-neighbour distance on pooled embeddings."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from defectflow.backends.base import Backend, nearest_distances
from defectflow.errors import ModelError


class KnnBackend(Backend):
    name = "knn"
    uses_patches = False

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.bank = torch.empty(0)

    def fit(
        self, patch: torch.Tensor | None, image: torch.Tensor | None, seed: int = 0
    ) -> dict[str, Any]:
        if image is None or len(image) == 0:
            raise ModelError("knn needs image embeddings of at least one training image")
        self.bank = F.normalize(image.float(), dim=1)
        return {"bank_size": len(self.bank), "dim": self.bank.shape[1]}

    def score(
        self, patch: torch.Tensor | None, image: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        d, _ = nearest_distances(
            F.normalize(image.float(), dim=1), self.bank, k=int(self.params.get("k", 1))
        )  # type: ignore[union-attr]
        return d.mean(1), None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.contiguous()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.bank = state["bank"]
