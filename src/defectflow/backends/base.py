"""The interface every embedding backend implements, and shared map post-processing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F


class Backend(ABC):
    """Fitted from stored features; scores fresh features. State is tensors only (safetensors)."""

    name: ClassVar[str]
    uses_patches: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    @abstractmethod
    def fit(
        self, patch: torch.Tensor | None, image: torch.Tensor | None, seed: int = 0
    ) -> dict[str, Any]:
        """Fit on normal training features; return facts for the model card."""

    @abstractmethod
    def score(
        self, patch: torch.Tensor | None, image: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw image scores ``[B]`` and low-resolution anomaly maps ``[B, h, w]`` (or None)."""

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


def smooth_maps(maps: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Upsample ``[B, h, w]`` maps to ``size`` x ``size`` and smooth them with a Gaussian."""
    out = F.interpolate(
        maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )
    if sigma > 0:
        radius = int(4.0 * sigma + 0.5)
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel /= kernel.sum()
        # separable Gaussian with reflected borders, as torchvision's gaussian_blur
        out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return out[:, 0]


def nearest_distances(
    query: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances and indices of the ``k`` nearest rows of ``bank`` for each query row,
    in chunks so memory stays bounded."""
    dists, idx = [], []
    bank_sq = (bank * bank).sum(1)
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * q @ bank.T + bank_sq[None, :]
        val, ind = torch.topk(d2, k=min(k, len(bank)), dim=1, largest=False)
        dists.append(val.clamp_min_(0).sqrt_())
        idx.append(ind)
    return torch.cat(dists), torch.cat(idx)
