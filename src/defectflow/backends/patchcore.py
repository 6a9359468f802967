"""PatchCore (Roth et al., CVPR 2022): a coreset of normal patch features; a patch's anomaly
score is its distance to the nearest memory entry (exact search, blocked matrix products)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from defectflow.backends.base import (
    Backend,
    Features,
    augmented_bank,
    knn_distances,
    nearest_index,
    nearest_sq_distances,
)
from defectflow.backends.params import PatchcoreParams
from defectflow.errors import ModelError

log = logging.getLogger(__name__)


def _flat(patch: np.ndarray) -> np.ndarray:
    n, c, h, w = patch.shape
    return np.ascontiguousarray(patch.transpose(0, 2, 3, 1).reshape(-1, c), dtype=np.float32)


def _projected(patch: np.ndarray, keep: np.ndarray | None, proj: np.ndarray | None,
               chunk_mb: int = 64) -> np.ndarray:  # fmt: skip
    """The candidate rows (all, or the sorted flat indices ``keep``) of ``[N, C, H, W]`` patch
    features, flattened and projected one chunk of images at a time."""
    n, c, h, w = patch.shape
    hw = h * w
    m = n * hw if keep is None else len(keep)
    out = np.empty((m, c if proj is None else proj.shape[1]), np.float32)
    step = max(1, (chunk_mb << 20) // (hw * c * 4))
    at = 0
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        block = _flat(patch[i0:i1])
        if keep is not None:
            lo, hi = np.searchsorted(keep, [i0 * hw, i1 * hw])
            block = block[keep[lo:hi] - i0 * hw]
        if proj is not None:
            block = block @ proj
        out[at : at + len(block)] = block
        at += len(block)
    return out


class PatchcoreBackend(Backend):
    name = "patchcore"
    params: PatchcoreParams

    def __init__(self, params: PatchcoreParams) -> None:
        super().__init__(params)
        self.bank = np.zeros((0, 0), np.float32)
        self.grid = np.zeros(2, np.int64)
        self.source = np.zeros(0, np.int32)  # training row each memory entry comes from
        self._bank_aug: np.ndarray | None = None

    def fit(self, data: Features, seed: int = 0) -> dict[str, Any]:
        """Candidates are streamed from the stored ``[N, C, H, W]`` features (float16 as stored)
        into their random projection, image chunk by image chunk: the only large arrays are the
        features and their projection, never a flattened float32 copy."""
        if len(data) == 0:
            raise ModelError("patchcore needs patch features of at least one training image")
        n, c, h, w = data.patch.shape
        total = n * h * w
        limit = self.params.max_memory_mb * 2**20 // (4 * c)
        keep = None
        if total > limit:
            keep = np.sort(np.random.default_rng(seed).permutation(total)[:limit])
            log.warning(
                "patchcore: %d candidate patches exceed max_memory_mb; using a random %d",
                total,
                limit,
            )
        m = total if keep is None else len(keep)
        target = max(1, int(m * self.params.coreset_ratio))
        if target >= m:
            rows = np.arange(total) if keep is None else keep
        else:
            from defectflow.backends.coreset import kcenter, projection

            rng = np.random.default_rng(seed)
            proj = projection(c, self.params.projection_dim, rng)
            x = _projected(data.patch, keep, proj)
            idx = kcenter(x, target, int(rng.integers(m)))
            del x
            rows = idx if keep is None else keep[idx]
        hw = h * w
        pos = rows % hw
        self.bank = np.ascontiguousarray(
            data.patch[rows // hw, :, pos // w, pos % w], dtype=np.float32
        )
        self.source = (rows // hw).astype(np.int32)
        self.grid = np.array([h, w])
        self._bank_aug = None
        return {
            "candidates": int(m),
            "bank_size": len(self.bank),
            "dim": c,
            "bank_mb": round(self.bank.nbytes / 2**20, 2),
        }

    def score(self, data: Features) -> tuple[np.ndarray, np.ndarray]:
        b, c, h, w = data.patch.shape
        q = _flat(data.patch)
        if self._bank_aug is None:
            self._bank_aug = augmented_bank(self.bank)
        d2 = nearest_sq_distances(q, self.bank, self._bank_aug)
        d = np.sqrt(d2).reshape(b, h * w).astype(np.float64)
        maps = d.reshape(b, h, w)
        # Image score with the re-weighting of the paper (Eq. 7): the most anomalous patch's
        # distance, damped when its nearest memory entry sits in a dense neighbourhood.
        rows = np.arange(b)
        best = d.argmax(1)
        s_star = d[rows, best]
        k = min(self.params.num_neighbors, len(self.bank))
        if k <= 1:
            return s_star, maps
        m_test = q.reshape(b, h * w, c)[rows, best].astype(np.float64)
        m_star = self.bank[nearest_index(m_test, self.bank)]
        _, nb = knn_distances(m_star, self.bank, k)
        dist_nb = np.linalg.norm(m_test[:, None, :] - self.bank[nb].astype(np.float64), axis=-1)
        e = np.exp(dist_nb - dist_nb.max(1, keepdims=True))
        weight = 1.0 - e[:, 0] / e.sum(1)
        return weight * s_star, maps

    def torch_scorer(self):
        """The scoring in torch ops, for the ONNX export (parity-checked there)."""
        import torch

        bank = torch.from_numpy(self.bank)
        k = min(self.params.num_neighbors, len(bank))

        def score(patch, image):
            b, c, h, w = patch.shape
            q = patch.permute(0, 2, 3, 1).reshape(-1, c)
            d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bank.T + (bank * bank).sum(1)[None]
            dmin, nn = d2.min(1)
            d = dmin.clamp_min(0).sqrt().reshape(b, h * w)
            rows, best = torch.arange(b), d.argmax(1)
            s_star = d[rows, best]
            if k <= 1:
                return s_star
            m_test = q.reshape(b, h * w, c)[rows, best]
            nb = torch.topk(
                torch.cdist(bank[nn.reshape(b, h * w)[rows, best]], bank), k, largest=False
            ).indices
            dist_nb = (m_test[:, None, :] - bank[nb]).norm(dim=-1)
            return (1 - torch.softmax(dist_nb, 1)[:, 0]) * s_star

        return score

    def fold_model(self, keep: np.ndarray, data: Features) -> PatchcoreBackend:
        """The delivered memory bank without the entries taken from held-out images: the
        held-out images' own patches are gone, as in a refit, at no coreset cost (on battery
        weld its out-of-fold scores correlate 0.985 with refits', quantiles within about 1%:
        bench/crossfit.py)."""
        fold = PatchcoreBackend(self.params)
        mask = np.isin(self.source, keep)
        fold.bank, fold.source, fold.grid = (
            np.ascontiguousarray(self.bank[mask]),
            self.source[mask],
            self.grid,
        )
        return fold

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank, "grid": self.grid, "source": self.source}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.bank = np.ascontiguousarray(state["bank"], dtype=np.float32)
        self.grid = state["grid"]
        self.source = state.get("source", np.zeros(0, np.int32))
        self._bank_aug = None
