"""An inverted-file index over a memory bank: approximate nearest-neighbour distances at a
fraction of exact search's cost, with exact distances to every entry it looks at.

The bank is split into ``lists`` by k-means (seeded); a query is compared with the entries of
its ``probe`` nearest lists only. Queries are grouped by list, so each list is one BLAS product
against every query that probes it (the form these CPUs are fast at). A distance found is the
exact distance to a real bank entry, so it is never below the exact nearest distance: the
search can only overstate a patch's distance, and a caller can certify a maximum exactly by
re-ranking the largest ones (PatchCore's image score does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from defectflow.models.backends.base import augmented_bank


def default_lists(n_bank: int) -> int:
    """Lists for a bank of ``n_bank`` entries: about sqrt(n), so the probed entries and the
    centroid comparison cost about the same."""
    return max(1, min(n_bank, round(math.sqrt(n_bank))))


@njit(cache=True, nogil=True)
def _smallest(d: np.ndarray, k: int) -> np.ndarray:  # pragma: no cover
    """Column indices of the ``k`` smallest values of each row (unordered), by insertion into a
    k-long buffer: one pass over the row (argpartition is several times slower here)."""
    n, m = d.shape
    out = np.empty((n, k), np.int64)
    val = np.empty(k, d.dtype)
    for i in range(n):
        for j in range(k):
            val[j] = d[i, j]
            out[i, j] = j
        worst = 0
        for j in range(1, k):
            if val[j] > val[worst]:
                worst = j
        for j in range(k, m):
            v = d[i, j]
            if v < val[worst]:
                val[worst] = v
                out[i, worst] = j
                worst = 0
                for t in range(1, k):
                    if val[t] > val[worst]:
                        worst = t
    return out


def _assign(x: np.ndarray, centroids_aug: np.ndarray, block: int = 16384) -> np.ndarray:
    """Index of the nearest centroid of each row (exact, blocked)."""
    out = np.empty(len(x), np.int32)
    q = np.ones((min(block, len(x)), x.shape[1] + 1), np.float32)
    for s in range(0, len(x), block):
        m = min(block, len(x) - s)
        q[:m, :-1] = x[s : s + m]
        out[s : s + m] = (q[:m] @ centroids_aug).argmin(axis=1)
    return out


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from ``k`` distinct seeded rows: (centroids ``[k, C]``, list of each row).
    An emptied cluster keeps its centroid."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    c = x[np.sort(rng.choice(len(x), k, replace=False))].astype(np.float64)
    for _ in range(iters):
        lists = _assign(x, augmented_bank(c.astype(np.float32)))
        count = np.bincount(lists, minlength=k)
        nz = count > 0
        starts = np.concatenate([[0], np.cumsum(count)[:-1]])[nz]
        sums = np.add.reduceat(
            x[np.argsort(lists, kind="stable")], starts, axis=0, dtype=np.float64
        )
        c[nz] = sums / count[nz, None]
    c32 = c.astype(np.float32)
    return c32, _assign(x, augmented_bank(c32))


@dataclass
class IvfIndex:
    """Centroids and the list of each bank row (what a checkpoint stores), with the bank sorted
    by list for the search (rebuilt from those, never stored)."""

    centroids: np.ndarray  # [L, C] float32
    lists: np.ndarray  # [N] int32, list of each bank row

    @classmethod
    def build(cls, bank: np.ndarray, n_lists: int, seed: int = 0) -> IvfIndex:
        n_lists = max(1, min(n_lists, len(bank)))
        centroids, lists = kmeans(bank, n_lists, seed)
        return cls(centroids, lists)

    def subset(self, mask: np.ndarray) -> IvfIndex:
        """The index of the bank rows ``mask`` keeps (same centroids)."""
        return IvfIndex(self.centroids, self.lists[mask])

    def prepare(self, bank: np.ndarray) -> _Prepared:
        return _Prepared(self, bank)


class _Prepared:
    """The bank in list order, augmented for one product per list."""

    def __init__(self, index: IvfIndex, bank: np.ndarray) -> None:
        n_lists = len(index.centroids)
        order = np.argsort(index.lists, kind="stable")
        self.aug = augmented_bank(np.asarray(bank, np.float32)[order])
        self.offsets = np.zeros(n_lists + 1, np.int64)
        np.cumsum(np.bincount(index.lists, minlength=n_lists), out=self.offsets[1:])
        self.centroids_aug = augmented_bank(index.centroids)
        self.n_lists = n_lists

    def sq_distances(self, query: np.ndarray, probe: int, qblock: int = 32768) -> np.ndarray:
        """Squared distance of each query row to the nearest entry of its ``probe`` nearest
        lists (>= the exact nearest squared distance; equal when that entry was probed)."""
        query = np.asarray(query, dtype=np.float32)
        n, c = query.shape
        probe = max(1, min(probe, self.n_lists))
        out = np.empty(n, np.float32)
        qa = np.ones((min(qblock, n), c + 1), np.float32)
        for s in range(0, n, qblock):
            m = min(qblock, n - s)
            q = qa[:m]
            q[:, :c] = query[s : s + m]
            to_centroids = q @ self.centroids_aug
            if probe < self.n_lists:
                probes = _smallest(to_centroids, probe)
            else:
                probes = np.broadcast_to(np.arange(self.n_lists), (m, probe))
            flat = probes.ravel()
            order = np.argsort(flat, kind="stable")
            query_of = order // probe  # the query of each (query, list) pair, grouped by list
            ends = np.cumsum(np.bincount(flat, minlength=self.n_lists))
            best = np.full(m, np.inf, np.float32)
            start = 0
            for lst in np.flatnonzero(np.diff(ends, prepend=0)):
                qi = query_of[start : ends[lst]]
                start = ends[lst]
                lo, hi = self.offsets[lst], self.offsets[lst + 1]
                if hi > lo:
                    d = q[qi] @ self.aug[:, lo:hi]
                    best[qi] = np.minimum(best[qi], d.min(axis=1))
            out[s : s + m] = best
        out += np.einsum("ij,ij->i", query, query)
        return np.maximum(out, 0.0)
