"""Greedy k-center coreset selection (PatchCore's memory bank), compiled with numba.

Same selection as the textbook loop (farthest point first on a random projection), made fast
and bounded:
- one pass over the candidates per selected point, fused (distance, running minimum and the
  next farthest point in one loop), on one thread: no OpenMP team to oversubscribe when the
  other core is busy;
- exact pruning by the triangle inequality: a candidate ``x`` whose nearest centre so far is
  ``a`` cannot get closer to the new centre ``p`` when ``d(a, p) >= 2 d(x, a)``, so its
  distance is not computed. As the coreset grows almost every candidate is pruned, and the loop
  reads 8 bytes per candidate instead of its whole feature vector.
Every buffer is allocated once before the loop.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from numba import njit

log = logging.getLogger(__name__)


@njit(cache=True, nogil=True, fastmath=True)
def _kcenter(x: np.ndarray, n: int, first: int, out: np.ndarray) -> int:  # pragma: no cover
    N, D = x.shape
    mind = np.full(N, np.inf, dtype=np.float32)  # squared distance to the nearest centre
    assign = np.zeros(N, dtype=np.int64)  # index (into out) of that centre
    cdist = np.zeros(n, dtype=np.float32)  # squared distance new centre -> each centre
    computed = 0
    idx = first
    for i in range(n):
        out[i] = idx
        p = x[idx]
        for j in range(i):
            c = x[out[j]]
            s = np.float32(0.0)
            for d in range(D):
                t = p[d] - c[d]
                s += t * t
            cdist[j] = s
        best = np.float32(-1.0)
        arg = 0
        for k in range(N):
            m = mind[k]
            if i == 0 or cdist[assign[k]] < 4.0 * m:
                xk = x[k]
                s = np.float32(0.0)
                for d in range(D):
                    t = xk[d] - p[d]
                    s += t * t
                computed += 1
                if s < m:
                    mind[k] = s
                    assign[k] = i
                    m = s
            if m > best:
                best = m
                arg = k
        idx = arg
    return computed


def projection(dim: int, projection_dim: int, rng: np.random.Generator) -> np.ndarray | None:
    """The random projection of the selection (None: select in the features' own space)."""
    if 0 < projection_dim < dim:
        proj = rng.standard_normal((dim, projection_dim), dtype=np.float32)
        proj /= np.sqrt(projection_dim)
        return proj
    return None


def greedy_coreset(
    features: np.ndarray, n: int, projection_dim: int = 128, seed: int = 0
) -> np.ndarray:
    """Indices of ``n`` rows of ``features`` chosen by greedy k-center selection."""
    N = len(features)
    rng = np.random.default_rng(seed)
    proj = projection(features.shape[1], projection_dim, rng)
    x = np.ascontiguousarray(features, dtype=np.float32)
    if proj is not None:
        x = x @ proj
    return kcenter(x, n, int(rng.integers(N)))


def kcenter(x: np.ndarray, n: int, first: int) -> np.ndarray:
    """Greedy k-center on (projected) rows ``x`` from row ``first``, on this process's device."""
    N = len(x)
    n = max(1, min(n, N))
    from defectflow import device

    if device.current() == "cuda":
        from defectflow.backends.cuda import greedy_coreset_cuda

        return greedy_coreset_cuda(x, n, first)
    out = np.empty(n, dtype=np.int64)
    t = time.perf_counter()
    computed = _kcenter(np.ascontiguousarray(x, dtype=np.float32), n, first, out)
    dt = time.perf_counter() - t
    log.info(
        "coreset: %d of %d candidates in %.1f s (%.0f points/s; %.1f%% of distances computed)",
        n,
        N,
        dt,
        n / max(dt, 1e-9),
        100.0 * computed / max(1, n * N),
    )
    return out
