"""PaDiM (Defard et al., 2021): a Gaussian per patch position; the anomaly map is the
Mahalanobis distance of each patch to its position's Gaussian."""

from __future__ import annotations

from typing import Any

import numpy as np

from defectflow.backends.base import Backend, Features
from defectflow.backends.params import PadimParams
from defectflow.errors import ModelError


def spd_inverse(cov: np.ndarray) -> np.ndarray:
    """Inverse of a batch of symmetric positive-definite matrices from their Cholesky factor
    (LAPACK ``potrf`` + ``potri``: a third of the arithmetic of a general solve), in float64.
    Tests check ``A @ inv(A) = I``."""
    from scipy.linalg import lapack

    out = np.empty(cov.shape, dtype=np.float64)
    lower = np.tril_indices(cov.shape[-1], -1)
    for i, a in enumerate(np.asarray(cov, dtype=np.float64)):
        chol, info = lapack.dpotrf(a, lower=1, clean=0)
        if info == 0:
            inv, info = lapack.dpotri(chol, lower=1)
        if info != 0:
            raise ModelError("a covariance matrix is not positive definite; raise `epsilon`")
        inv[lower[1], lower[0]] = inv[lower]  # potri fills one triangle
        out[i] = inv
    return out


class PadimBackend(Backend):
    name = "padim"
    params: PadimParams

    def __init__(self, params: PadimParams) -> None:
        super().__init__(params)
        self.mean = np.zeros((0, 0), np.float32)
        self.inv_cov = np.zeros((0, 0, 0), np.float32)
        self.channels = np.zeros(0, np.int64)
        self.grid = np.zeros(2, np.int64)
        self._stats: tuple | None = None  # fit's sufficient statistics, for fold models

    def fit(self, data: Features, seed: int = 0) -> dict[str, Any]:
        """Streams over the images in chunks, accumulating each position's sums of the shifted
        features and of their outer products in float64: the only large array is the stored
        features (float16), whatever their number."""
        if len(data) < 2:
            raise ModelError("padim needs patch features of at least two training images")
        n, c, h, w = data.patch.shape
        k = self.params.n_features or c
        if k < c:
            self.channels = np.sort(np.random.default_rng(seed).permutation(c)[:k])
        else:
            self.channels = np.arange(c)
        self._stats = self._sums(data.patch, np.arange(n), shift=None)
        self.grid = np.array([h, w])
        self._set_gaussians(*self._stats)
        return {
            "positions": h * w,
            "dim": int(len(self.channels)),
            "model_mb": round(self.inv_cov.nbytes / 2**20, 2),
        }

    def _sums(self, patch: np.ndarray, rows: np.ndarray, shift: np.ndarray | None,
              chunk: int = 32) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """(n, shift [P, C], sum of x - shift [P, C], sum of their outer products [P, C, C]) over
        ``rows`` of ``patch``; the shift (the first chunk's mean unless given) keeps the float64
        sums free of cancellation."""
        _, _, h, w = patch.shape
        ch = self.channels
        s1 = np.zeros((h * w, len(ch)))
        s2 = np.zeros((h * w, len(ch), len(ch)))
        for i in range(0, len(rows), chunk):
            x = patch[rows[i : i + chunk]][:, ch].astype(np.float64)
            x = x.reshape(len(x), len(ch), h * w).transpose(2, 0, 1)  # [P, B, C]
            if shift is None:
                shift = x.mean(1)
            x -= shift[:, None, :]
            s1 += x.sum(1)
            s2 += np.matmul(x.transpose(0, 2, 1), x)
        return len(rows), shift, s1, s2

    def _set_gaussians(self, n: int, shift: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> None:
        cov = (s2 - s1[:, :, None] * s1[:, None, :] / n) / (n - 1)
        cov += self.params.epsilon * np.eye(cov.shape[-1])
        self.mean = (shift + s1 / n).astype(np.float32)
        self.inv_cov = spd_inverse(cov).astype(np.float32)

    def fold_model(self, keep: np.ndarray, data: Features) -> PadimBackend | None:
        """The Gaussians of the training rows ``keep`` exactly, without a refit: the held-out
        rows' sums (same shift) are taken off the delivered model's (one pass over them)."""
        stats = self._stats
        if stats is None:
            return None
        n, shift, s1, s2 = stats
        held = np.setdiff1d(np.arange(len(data)), keep)
        nh, _, h1, h2 = self._sums(data.patch, held, shift)
        if n - nh < 2:
            return None
        fold = PadimBackend(self.params)
        fold.channels, fold.grid = self.channels, self.grid
        fold._set_gaussians(n - nh, shift, s1 - h1, s2 - h2)
        return fold

    def score(self, data: Features) -> tuple[np.ndarray, np.ndarray]:
        b, _, h, w = data.patch.shape
        x = data.patch[:, self.channels].astype(np.float32).reshape(b, -1, h * w)
        diff = x.transpose(2, 0, 1) - self.mean[:, None, :]  # [P, B, C]
        d2 = np.einsum("pbc,pbc->pb", diff @ self.inv_cov, diff)  # batched over positions
        maps = np.sqrt(np.maximum(d2, 0.0)).T.reshape(b, h, w)
        return maps.reshape(b, -1).max(1).astype(np.float64), maps

    def torch_scorer(self):
        """The scoring in torch ops, for the ONNX export (parity-checked there)."""
        import torch

        mean, inv, ch = (
            torch.from_numpy(self.mean),
            torch.from_numpy(self.inv_cov),
            torch.from_numpy(self.channels),
        )

        def score(patch, image):
            b, _, h, w = patch.shape
            diff = patch[:, ch].reshape(b, -1, h * w).permute(2, 0, 1) - mean[:, None, :]
            return ((diff @ inv) * diff).sum(-1).clamp_min(0).sqrt().amax(0)

        return score

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "inv_cov": self.inv_cov,
            "channels": self.channels,
            "grid": self.grid,
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.inv_cov = state["mean"], state["inv_cov"]
        self.channels, self.grid = state["channels"], state["grid"]
