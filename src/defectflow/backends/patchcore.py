"""PatchCore (Roth et al., CVPR 2022): a coreset of normal patch features; a patch's anomaly
score is its distance to the nearest memory entry."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from tqdm import tqdm

from defectflow.backends.base import Backend, nearest_distances
from defectflow.errors import ModelError

log = logging.getLogger(__name__)


def greedy_coreset(
    features: torch.Tensor, n: int, projection_dim: int = 128, seed: int = 0
) -> torch.Tensor:
    """Indices of ``n`` rows chosen by greedy k-center selection (farthest point first).

    Memory-bounded: every buffer is allocated once before the loop (projected features, their
    squared norms, the running min-distance and one scratch vector); an iteration writes into
    them in place and allocates nothing that grows with the data.
    """
    N = features.shape[0]
    n = max(1, min(n, N))
    gen = torch.Generator().manual_seed(seed)
    if 0 < projection_dim < features.shape[1]:
        proj = torch.randn(features.shape[1], projection_dim, generator=gen) / math.sqrt(
            projection_dim
        )
        x = features.float() @ proj
    else:
        x = features.float().contiguous()
    sq = (x * x).sum(1)
    mind = torch.full((N,), float("inf"))
    scratch = torch.empty(N)
    chosen = torch.empty(n, dtype=torch.long)
    idx = int(torch.randint(N, (1,), generator=gen))
    bar = tqdm(total=n, desc="coreset", unit="pt", mininterval=5.0, disable=n < 2000)
    for i in range(n):
        chosen[i] = idx
        torch.mv(x, x[idx], out=scratch)  # x . p
        scratch.mul_(-2.0).add_(sq).add_(sq[idx])  # |x - p|^2
        torch.minimum(mind, scratch, out=mind)
        idx = int(torch.argmax(mind))
        bar.update(1)
    bar.close()
    return chosen


class PatchcoreBackend(Backend):
    name = "patchcore"

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.bank = torch.empty(0)
        self.grid = torch.zeros(2, dtype=torch.long)

    def fit(
        self, patch: torch.Tensor | None, image: torch.Tensor | None, seed: int = 0
    ) -> dict[str, Any]:
        if patch is None or len(patch) == 0:
            raise ModelError("patchcore needs patch features of at least one training image")
        n, c, h, w = patch.shape
        flat = patch.permute(0, 2, 3, 1).reshape(-1, c)
        limit = int(self.params.get("max_memory_mb", 4000)) * 2**20 // (4 * c)
        if len(flat) > limit:
            keep = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:limit]
            log.warning(
                "patchcore: %d candidate patches exceed max_memory_mb; using a random %d",
                len(flat),
                limit,
            )
            flat = flat[keep.sort().values]
        target = max(1, int(len(flat) * float(self.params.get("coreset_ratio", 0.1))))
        if target >= len(flat):
            self.bank = flat.float().contiguous()  # the whole bank: no selection to make
        else:
            idx = greedy_coreset(flat, target, int(self.params.get("projection_dim", 128)), seed)
            self.bank = flat[idx].float().contiguous()
        self.grid = torch.tensor([h, w])
        return {
            "candidates": len(flat),
            "bank_size": len(self.bank),
            "dim": c,
            "bank_mb": round(self.bank.numel() * 4 / 2**20, 2),
        }

    def score(
        self, patch: torch.Tensor | None, image: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, c, h, w = patch.shape  # type: ignore[union-attr]
        q = patch.permute(0, 2, 3, 1).reshape(-1, c).float()  # type: ignore[union-attr]
        d, nn = nearest_distances(q, self.bank, k=1)
        d, nn = d[:, 0].reshape(b, h * w), nn[:, 0].reshape(b, h * w)
        maps = d.reshape(b, h, w)
        # Image score with the re-weighting of the paper (Eq. 7): the most anomalous patch's
        # distance, damped when its nearest memory entry sits in a dense neighbourhood.
        k = min(int(self.params.get("num_neighbors", 9)), len(self.bank))
        best = d.argmax(1)
        s_star = d[torch.arange(b), best]
        if k <= 1:
            return s_star, maps
        m_test = q.reshape(b, h * w, c)[torch.arange(b), best]
        m_star = self.bank[nn[torch.arange(b), best]]
        _, nb = nearest_distances(m_star, self.bank, k=k)
        dist_nb = torch.linalg.vector_norm(m_test[:, None, :] - self.bank[nb], dim=-1)
        weight = 1.0 - torch.softmax(dist_nb, dim=1)[:, 0]
        return weight * s_star, maps

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.contiguous(), "grid": self.grid}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.bank, self.grid = state["bank"], state["grid"]
