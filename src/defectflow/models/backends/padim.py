"""PaDiM (Defard et al., 2021): a Gaussian per patch position; the anomaly map is the
Mahalanobis distance of each patch to its position's Gaussian."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from defectflow.errors import ModelError
from defectflow.models.backends.base import Backend, Features
from defectflow.models.backends.params import PadimParams
from defectflow.threads import parallel_map

#: positions scored in one part (parts run in parallel; fixed, so scores do not depend on threads)
POSITIONS_PART = 64


@functools.lru_cache(maxsize=8)
def _tril(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tril_indices(n, -1)


def _spd_factor(a: np.ndarray, inverse: bool) -> np.ndarray:
    """The lower Cholesky factor of one symmetric positive-definite matrix (float64, LAPACK
    ``potrf``), or its inverse from that factor (``potri``: a third of the arithmetic of a
    general solve)."""
    # lazy: scipy (0.3-0.5 s) only where it is used, not on every import of the module
    from scipy.linalg import lapack

    chol, info = lapack.dpotrf(a, lower=1, clean=1)
    if info == 0 and inverse:
        chol, info = lapack.dpotri(chol, lower=1)
        lower = _tril(len(a))
        chol[lower[1], lower[0]] = chol[lower]  # potri fills one triangle
    if info != 0:
        raise ModelError("a covariance matrix is not positive definite; raise `epsilon`")
    return chol


def spd_inverse(cov: np.ndarray) -> np.ndarray:
    """Inverse of a batch of symmetric positive-definite matrices, in float64. Tests check
    ``A @ inv(A) = I``."""
    return np.stack([_spd_factor(a, True) for a in np.asarray(cov, dtype=np.float64)])


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
        self._chol: np.ndarray | None = None  # a fold model's Cholesky factors L, as L^T

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

    def _sums(
        self, patch: np.ndarray, rows: np.ndarray, shift: np.ndarray | None, chunk: int = 32
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(n, shift [P, C], sum of x - shift [P, C], sum of their outer products [P, C, C]) over
        ``rows`` of ``patch``; the shift (the first chunk's mean unless given) keeps the float64
        sums free of cancellation."""
        _, _, h, w = patch.shape
        ch = self.channels
        s1 = np.zeros((h * w, len(ch)))
        s2 = np.zeros((h * w, len(ch), len(ch)))
        for i in range(0, len(rows), chunk):
            x = patch[rows[i : i + chunk]][:, ch].reshape(-1, len(ch), h * w)
            x = np.ascontiguousarray(x.transpose(2, 1, 0), dtype=np.float64)  # [P, C, B]
            if shift is None:
                shift = x.mean(2)
            x -= shift[:, :, None]
            s1 += x.sum(2)
            for p in range(h * w):  # one contiguous BLAS product a position: 9x a batched matmul
                s2[p] += x[p] @ x[p].T
        return len(rows), shift, s1, s2

    def _set_gaussians(
        self,
        n: int,
        shift: np.ndarray,
        s1: np.ndarray,
        s2: np.ndarray,
        inverse: bool = True,
        minus: tuple | None = None,
        ddof: int = 1,
    ) -> None:
        """Each position's mean and inverse covariance (or, ``inverse=False``, its Cholesky
        factor: all a fold model needs to score, at a quarter of the arithmetic), one position
        at a time so the float64 covariance stays in cache. ``minus``: sums ``(s1, s2)`` of rows
        to take off first (a fold's held-out images)."""
        if minus is not None:
            s1 = s1 - minus[0]
        p_, c = s1.shape
        factors = np.empty((p_, c, c), np.float32)
        for p in range(p_):
            a = s2[p] - np.outer(s1[p], s1[p] / n)
            if minus is not None:
                a -= minus[1][p]
            a /= n - ddof
            a.flat[:: c + 1] += self.params.epsilon
            # LAPACK works in Fortran order: hand it the symmetric a as a.T and store the factor
            # transposed (a C-order copy of Fortran-order data, 8x faster than reordering it)
            factors[p] = _spd_factor(a.T, inverse).T
        self.mean = (shift + s1 / n).astype(np.float32)
        if inverse:
            self.inv_cov, self._chol = factors, None
        else:
            self.inv_cov, self._chol = np.zeros((0, 0, 0), np.float32), factors

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
        fold._set_gaussians(n - nh, shift, s1, s2, inverse=False, minus=(h1, h2))
        return fold

    def loo_scores(
        self,
        data: Features,
        fold: np.ndarray,
        query: Features | None = None,
        query_fold: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Exact leave-one-out scores, at the cost of one scoring pass.

        Without fit image i (``d``: its feature minus the mean of all n), each position's
        scatter loses ``n/(n-1) d d^T`` and the mean moves by ``-d/(n-1)``. With ``A =
        scatter/(n-2) + epsilon I`` the covariance without i is ``A - c d d^T``, ``c =
        n/((n-1)(n-2))``, and Sherman-Morrison gives the squared Mahalanobis distance of any
        ``y`` (``e = y - mean + d/(n-1)``): ``e^T A^-1 e + c (e^T A^-1 d)^2 / (1 - c d^T A^-1
        d)``. For i itself that is ``(n/(n-1))^2 q/(1 - c q)``, ``q = d^T A^-1 d``. Folds of
        more than one image (``group_id``): None, one fold model each."""
        stats = self._stats
        n = len(data)
        fold = np.asarray(fold)
        if stats is None or n < 3 or len(np.unique(fold)) < n:
            return None
        q_data = data if query is None else query
        pos = np.argsort(fold)  # fold -> fit row (each fold one row)
        src = pos[np.searchsorted(fold[pos], fold if query is None else np.asarray(query_fold))]
        _, shift, s1, s2 = stats
        mean = shift + s1 / n
        c = n / ((n - 1) * (n - 2))
        p_, ch = s1.shape
        inv = np.empty((p_, ch, ch))  # float64: 1 - c q nears 0 where n is below the channels
        for p in range(p_):
            a = (s2[p] - np.outer(s1[p], s1[p] / n)) / (n - 2)
            a.flat[:: ch + 1] += self.params.epsilon
            inv[p] = _spd_factor(a.T, True).T
        _, _, h, w = data.patch.shape

        def centred(patch: np.ndarray) -> np.ndarray:  # [P, B, C] float64, minus the mean
            x = patch[:, self.channels].astype(np.float64).reshape(len(patch), ch, h * w)
            return x.transpose(2, 0, 1) - mean[:, None, :]

        out = np.empty(len(q_data))
        for s in range(0, len(q_data), 32):
            rows = np.arange(s, min(s + 32, len(q_data)))
            d = centred(data.patch[src[rows]])
            e = centred(q_data.patch[rows]) + d / (n - 1)
            ae = e @ inv
            q = np.einsum("pbc,pbc->pb", d @ inv, d)
            d2 = np.einsum("pbc,pbc->pb", ae, e)
            d2 += c * np.einsum("pbc,pbc->pb", ae, d) ** 2 / np.maximum(1.0 - c * q, 1e-300)
            out[rows] = np.sqrt(np.maximum(d2, 0.0)).max(0)
        return out

    def _sq_maps(self, patch: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each patch to its position's Gaussian, ``[P, B]``."""
        b, _, h, w = patch.shape
        x = patch[:, self.channels].astype(np.float32).reshape(b, -1, h * w)
        diff = x.transpose(2, 0, 1) - self.mean[:, None, :]  # [P, B, C]
        if self._chol is None:  # batched over positions, in parts of positions run in parallel
            d2 = np.empty(diff.shape[:2], np.float32)

            def part(s: int) -> None:
                sl = slice(s, s + POSITIONS_PART)
                d2[sl] = np.einsum("pbc,pbc->pb", diff[sl] @ self.inv_cov[sl], diff[sl])

            parallel_map(part, list(range(0, len(diff), POSITIONS_PART)))
        else:  # |L^-1 diff|^2, L L^T the covariance
            # lazy: scipy (0.3-0.5 s) only where it is used, not on every import of the module
            from scipy.linalg import lapack

            d2 = np.empty(diff.shape[:2], np.float32)
            for p, (lt, dp) in enumerate(zip(self._chol, diff, strict=True)):
                z, _ = lapack.strtrs(lt.T, dp.T, lower=1)  # lt.T: L, in Fortran order
                d2[p] = np.einsum("cb,cb->b", z, z)
        return d2

    def score(self, data: Features) -> tuple[np.ndarray, np.ndarray]:
        b, _, h, w = data.patch.shape
        d2 = self._sq_maps(data.patch)
        maps = np.sqrt(np.maximum(d2, 0.0)).T.reshape(b, h, w)
        return maps.reshape(b, -1).max(1).astype(np.float64), maps

    def torch_scorer(self):
        """The scoring in torch ops, for the ONNX export (parity-checked there)."""
        # lazy: torch (seconds to import) only where a network runs or is exported
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
