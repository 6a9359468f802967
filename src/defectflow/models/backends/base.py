"""The protocol every backend implements, the inputs it consumes, and shared numpy helpers.

Embedding backends fit and score in numpy on stored features (float32), so the pipeline's
fit/score jobs and ``defectflow infer`` need neither torch nor timm. The anomalib backend
consumes images and keeps its own torch forward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from defectflow import device
from defectflow.models.backends.params import BackendParams
from defectflow.threads import parallel_map


@dataclass
class Features:
    """Stored backbone features of a set of images (one row per image)."""

    ids: list[str]
    patch: np.ndarray  # [N, C, H, W] float32
    image: np.ndarray  # [N, D] float32

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: list[int] | np.ndarray) -> Features:
        idx = np.asarray(idx, dtype=np.int64)
        return Features([self.ids[i] for i in idx], self.patch[idx], self.image[idx])


@dataclass
class Images:
    """Image files (for backends that run their own forward)."""

    ids: list[str]
    paths: list[str]
    image_size: int

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: list[int] | np.ndarray) -> Images:
        return Images([self.ids[i] for i in idx], [self.paths[i] for i in idx], self.image_size)


Inputs = Features | Images


def batches(data: Any, size: int) -> Iterator[Any]:
    """``data`` (Features or Images) in consecutive parts of at most ``size`` rows."""
    for s in range(0, len(data), size):
        yield data.subset(np.arange(s, min(s + size, len(data))))


_BLAS = None  # the BLAS libraries' thread control, made on first use


def score_each(backend: Backend, data: Any) -> Iterator[tuple[float, np.ndarray | None]]:
    """Each image of ``data`` scored on its own: (raw score, its low-resolution map or None).

    A batched product takes another BLAS path than a single row (gemm vs gemv; PaDiM's per-position
    products, PatchCore's distance blocks), so an image scored among others differs in the last
    bits from the same image scored alone. Scoring one image at a time makes a score independent of
    its company: the pipeline, ``defectflow infer``, ``serve`` and ``watch`` agree bit for bit.
    BLAS runs on one thread here: how a product is split across threads changes its last bits too,
    and a score must not depend on the machine's core count.
    """
    global _BLAS
    if _BLAS is None:
        # lazy: threadpoolctl inspects the loaded BLAS libraries (once: 0.5 ms a time otherwise)
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        for i in range(len(data)):
            sc, mp = backend.score(data.subset([i]))
            yield float(np.asarray(sc, np.float64)[0]), (None if mp is None else mp[0])


class Backend(ABC):
    """Fit on normal training inputs; score fresh inputs. State is arrays only (safetensors)."""

    name: ClassVar[str]
    #: its maps are final (input size, smoothed), as anomalib's; else they are upsampled and smoothed
    maps_final: ClassVar[bool] = False

    def __init__(self, params: BackendParams) -> None:
        self.params = params

    @abstractmethod
    def fit(self, data: Any, seed: int = 0) -> dict[str, Any]:
        """Fit on normal training inputs; return facts for the model card."""

    @abstractmethod
    def score(self, data: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw image scores ``[B]`` (float64) and low-resolution maps ``[B, h, w]`` (or None)."""

    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...

    def fold_model(self, keep: np.ndarray, data: Any) -> Backend | None:
        """A model of the training rows ``keep`` (indices into ``data``, the fit data), derived
        cheaply from this fitted one for cross-fitting; None: the fold model is refitted (the
        default)."""
        return None

    def loo_scores(
        self, data: Any, fold: np.ndarray, query: Any = None, query_fold: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Leave-one-out raw scores in closed form: each row of the fit data ``data`` (or of
        ``query``, rows made from a fit row of fold ``query_fold``) scored by this model without
        the fit rows of its ``fold`` (one image, or one ``group_id``), as a refit without them
        would score it. None: no closed form here (the caller makes one fold model per fold)."""
        return None

    def extra_meta(self) -> dict[str, Any]:
        """Anything besides params the backend needs to rebuild itself (saved in the checkpoint)."""
        return {}

    def set_meta(self, meta: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Counterpart of :meth:`extra_meta` at load time."""


def flat_patches(patch: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` patch features as float32 rows ``[N*H*W, C]`` (image-major)."""
    n, c, h, w = patch.shape
    return np.ascontiguousarray(patch.transpose(0, 2, 3, 1).reshape(-1, c), dtype=np.float32)


def augmented_bank(bank: np.ndarray) -> np.ndarray:
    """``[C + 1, N]``: the bank's rows times -2, then their squared norms, so that one matrix
    product with ``[q, 1]`` gives ``|b|^2 - 2 q.b`` (no separate pass adding the norms)."""
    bank = np.asarray(bank, dtype=np.float32)
    out = np.empty((bank.shape[1] + 1, len(bank)), np.float32)
    np.multiply(bank.T, np.float32(-2.0), out=out[:-1])
    out[-1] = np.einsum("ij,ij->i", bank, bank)
    return out


def nearest_sq_distances(
    query: np.ndarray,
    bank: np.ndarray,
    aug: np.ndarray | None = None,
    qblock: int = 256,
    bblock: int = 2048,
) -> np.ndarray:
    """Exact squared Euclidean distance of each query row to its nearest ``bank`` row.

    Blocked matrix products (BLAS) over query and bank blocks small enough for the distance
    block to stay in cache: ``[q, 1] @ augmented_bank`` is ``|b|^2 - 2 q.b``, its row minimum
    plus ``|q|^2`` the answer, so memory is bounded whatever the sizes. ``aug``: the bank's
    :func:`augmented_bank`, when the caller keeps it.
    """

    if device.current() == "cuda":
        # lazy: torch kernels, only on CUDA
        from defectflow.models.backends.cuda import nearest_sq_distances_cuda

        return nearest_sq_distances_cuda(query, bank)
    query = np.asarray(query, dtype=np.float32)
    if aug is None:
        aug = augmented_bank(bank)
    n, c = query.shape
    best = np.full(n, np.inf, dtype=np.float32)

    def rows(qs: int) -> None:  # one query block: its own buffers, so blocks run in parallel
        m = min(qblock, n - qs)
        q = np.ones((m, c + 1), dtype=np.float32)
        q[:, :c] = query[qs : qs + m]
        block = np.empty((m, bblock), dtype=np.float32)
        b_best = best[qs : qs + m]
        for bs in range(0, aug.shape[1], bblock):
            b = aug[:, bs : bs + bblock]
            d2 = block[:, : b.shape[1]]
            np.matmul(q, b, out=d2)
            np.minimum(b_best, d2.min(axis=1), out=b_best)

    # blocks fixed by qblock, not by the threads: the same distances on any machine
    parallel_map(rows, list(range(0, n, qblock)))
    best += np.einsum("ij,ij->i", query, query)
    return np.maximum(best, 0.0)


def nearest_index(query: np.ndarray, bank: np.ndarray, aug: np.ndarray | None = None) -> np.ndarray:
    """Index of the nearest bank row for a few query rows (exact)."""
    return knn_distances(query, bank, 1, aug)[1][:, 0]


def knn_distances(
    query: np.ndarray, bank: np.ndarray, k: int, aug: np.ndarray | None = None, margin: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances ``[n, k]`` and indices of the ``k`` nearest bank rows, in float64.

    With ``aug`` (the bank's :func:`augmented_bank`, kept by the caller) the bank is screened in
    float32 first and only the ``k + margin`` nearest are measured in float64, so a large bank is
    never copied to float64.
    """
    q = np.asarray(query, dtype=np.float64)
    k = min(k, len(bank))
    if aug is not None and k + margin < len(bank):
        qa = np.ones((len(q), q.shape[1] + 1), np.float32)
        qa[:, :-1] = q
        cand = np.argpartition(qa @ aug, k + margin - 1, axis=1)[:, : k + margin]
        b = np.asarray(bank[cand], dtype=np.float64)  # [n, k + margin, C]
        d2 = ((b - q[:, None, :]) ** 2).sum(-1)
        order = np.lexsort((cand, d2))[:, :k]  # by distance, ties: lower index first
        return np.sqrt(np.take_along_axis(d2, order, 1)), np.take_along_axis(cand, order, 1)
    b = np.asarray(bank, dtype=np.float64)
    d2 = (q * q).sum(1)[:, None] - 2.0 * q @ b.T + (b * b).sum(1)[None, :]
    if k < len(b):  # the k smallest, then only those sorted (ties: lower index first)
        part = np.sort(np.argpartition(d2, k - 1, axis=1)[:, :k], axis=1)
        order = np.argsort(np.take_along_axis(d2, part, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
    else:
        idx = np.argsort(d2, axis=1, kind="stable")
    return np.sqrt(np.maximum(np.take_along_axis(d2, idx, axis=1), 0.0)), idx
