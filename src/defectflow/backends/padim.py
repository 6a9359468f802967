"""PaDiM (Defard et al., 2021): a Gaussian per patch position; the anomaly map is the
Mahalanobis distance of each patch to its position's Gaussian."""

from __future__ import annotations

from typing import Any

import torch

from defectflow.backends.base import Backend
from defectflow.errors import ModelError


def spd_inverse(cov: torch.Tensor) -> torch.Tensor:
    """Inverse of a batch of symmetric positive-definite matrices via Cholesky.

    torch 2.14's batched ``linalg.inv``/``solve`` return wrong results on this class of input
    with several CPU threads; ``cholesky`` + ``cholesky_inverse`` are correct (tests check
    ``A @ inv(A) = I``).
    """
    chol, info = torch.linalg.cholesky_ex(cov.double())
    if int(info.max()) > 0:
        raise ModelError("a covariance matrix is not positive definite; raise `epsilon`")
    return torch.cholesky_inverse(chol).float()


class PadimBackend(Backend):
    name = "padim"

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.mean = torch.empty(0)
        self.inv_cov = torch.empty(0)
        self.channels = torch.empty(0, dtype=torch.long)
        self.grid = torch.zeros(2, dtype=torch.long)

    def fit(
        self, patch: torch.Tensor | None, image: torch.Tensor | None, seed: int = 0
    ) -> dict[str, Any]:
        if patch is None or len(patch) < 2:
            raise ModelError("padim needs patch features of at least two training images")
        n, c, h, w = patch.shape
        k = int(self.params.get("n_features", 0)) or c
        if k < c:
            self.channels = (
                torch.randperm(c, generator=torch.Generator().manual_seed(seed))[:k].sort().values
            )
        else:
            self.channels = torch.arange(c)
        x = patch[:, self.channels].float().permute(2, 3, 0, 1).reshape(h * w, n, -1)  # [P, N, C]
        self.mean = x.mean(1)
        xc = x - self.mean[:, None, :]
        cov = torch.einsum("pnc,pnd->pcd", xc, xc) / (n - 1)
        cov += float(self.params.get("epsilon", 0.01)) * torch.eye(cov.shape[-1])
        self.inv_cov = spd_inverse(cov)
        self.grid = torch.tensor([h, w])
        return {
            "positions": h * w,
            "dim": int(self.channels.numel()),
            "model_mb": round(self.inv_cov.numel() * 4 / 2**20, 2),
        }

    def score(
        self, patch: torch.Tensor | None, image: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, _, h, w = patch.shape  # type: ignore[union-attr]
        x = patch[:, self.channels].float().permute(0, 2, 3, 1).reshape(b, h * w, -1)  # type: ignore[index]
        diff = x - self.mean[None]
        d2 = torch.einsum("bpc,pcd,bpd->bp", diff, self.inv_cov, diff).clamp_min_(0)
        maps = d2.sqrt().reshape(b, h, w)
        return maps.flatten(1).amax(1), maps

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "mean": self.mean.contiguous(),
            "inv_cov": self.inv_cov.contiguous(),
            "channels": self.channels,
            "grid": self.grid,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.inv_cov, self.channels, self.grid = (
            state["mean"],
            state["inv_cov"],
            state["channels"],
            state["grid"],
        )
