"""Greedy k-center coreset selection (PatchCore's memory bank), at any number of images.

Greedy k-center (Gonzalez): start anywhere, then add the candidate farthest from the chosen
centres, until the budget is met. Two exact implementations of that same selection:

- ``kcenter`` (the whole candidate set): batched on BLAS. The next centres are taken from the
  ``top`` candidates farthest from the centres so far, one after another, while each one is
  provably the one the textbook loop would take next (its distance, updated with the centres
  just taken, is above every candidate outside the ``top``); then every candidate's distance is
  updated with all of them in one matrix product. Same centres as the textbook loop (up to ties
  and float rounding), a few dozen passes over the data instead of one per centre.
- ``_kcenter`` (numba, one thread): a fused loop with exact triangle-inequality pruning, fastest
  on the small candidate sets of single images.

At scale (``select_bank``) the global greedy's cost, candidates x bank entries, is bounded: when
it would exceed its bound (``max_greedy_pairs``, ``max_memory_mb``), each image's patches are
first reduced to its own greedy k-center coreset (composable coresets: the union of per-image
coresets covers every candidate within the per-image radius), and the global greedy runs on
that union. The covering radii of both
stages are returned, so the cost in coverage is measured, not assumed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from defectflow import device
from defectflow.models.backends.base import flat_patches
from defectflow.progress import Progress

log = logging.getLogger(__name__)


@njit(cache=True, nogil=True, fastmath=True)
def _kcenter(
    x: np.ndarray, n: int, first: int, out: np.ndarray, radii: np.ndarray
) -> float:  # pragma: no cover
    """Greedy k-center of ``n`` rows of ``x`` from ``first`` into ``out``; ``radii[i]``: the
    covering radius (squared) by the first ``i + 1`` centres; returns the last one."""
    N, D = x.shape
    mind = np.full(N, np.inf, dtype=np.float32)  # squared distance to the nearest centre
    assign = np.zeros(N, dtype=np.int64)  # index (into out) of that centre
    cdist = np.zeros(n, dtype=np.float32)  # squared distance new centre -> each centre
    idx = first
    best = np.float32(0.0)
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
                if s < m:
                    mind[k] = s
                    assign[k] = i
                    m = s
            if m > best:
                best = m
                arg = k
        radii[i] = max(best, np.float32(0.0))
        idx = arg
    return max(best, np.float32(0.0))


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
    return kcenter(x, n, int(rng.integers(N)))[0]


def kcenter(
    x: np.ndarray, n: int, first: int, top: int = 1024, block: int = 32768
) -> tuple[np.ndarray, float]:
    """Greedy k-center of ``n`` of the (projected) rows ``x`` from row ``first``, on this
    process's device: (indices in selection order, covering radius of ``x`` by them)."""
    N = len(x)
    n = max(1, min(n, N))

    if device.current() == "cuda":
        # lazy: torch kernels, only on CUDA
        from defectflow.models.backends.cuda import greedy_coreset_cuda

        return greedy_coreset_cuda(x, n, first)
    x = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    mind = np.full(N, np.inf, np.float32)  # squared distance to the nearest centre so far
    out = np.empty(n, np.int64)
    done, new, passes = 0, [first], 0
    t = time.perf_counter()
    progress = Progress(n, f"coreset: greedy k-center over {N:,} candidates", every=10.0)
    while True:
        centres = x[new]
        w = np.ascontiguousarray(-2.0 * centres.T, dtype=np.float32)
        w_sq = np.einsum("ij,ij->i", centres, centres)
        for s in range(0, N, block):
            d = x[s : s + block] @ w
            d += w_sq
            m = d.min(axis=1)
            m += sq[s : s + block]
            np.minimum(mind[s : s + block], m, out=mind[s : s + block])
        passes += 1
        out[done : done + len(new)] = new
        done += len(new)
        progress.update(len(new))
        if done >= n:
            break
        new = _next_centres(x, sq, mind, min(top, N - 1), n - done)
    radius = float(np.sqrt(max(float(mind.max()), 0.0)))
    dt = time.perf_counter() - t
    log.info(
        "coreset: %d of %d candidates in %.1f s (%.0f points/s, %d passes); covering radius %.4g",
        n,
        N,
        dt,
        n / max(dt, 1e-9),
        passes,
        radius,
    )
    return out, radius


def _next_centres(
    x: np.ndarray, sq: np.ndarray, mind: np.ndarray, top: int, limit: int
) -> list[int]:
    """The next centres of the textbook loop, as many as can be proven from the ``top``
    farthest candidates: candidate ``j``'s distance updated with the centres just taken is exact
    among them, and every candidate outside them is at most ``tau`` away from a centre."""
    N = len(mind)
    part = np.argpartition(mind, N - top - 1)
    cand = part[N - top :]
    tau = mind[part[N - top - 1]]
    cur = mind[cand].copy()
    xc = x[cand]
    pair = sq[cand][:, None] - 2.0 * (xc @ xc.T) + sq[cand][None, :]
    new: list[int] = []
    while len(new) < limit:
        j = int(cur.argmax())
        if new and cur[j] <= tau:
            break
        new.append(int(cand[j]))
        np.minimum(cur, pair[:, j], out=cur)
        cur[j] = -np.inf
    return new


@dataclass
class Selection:
    """A memory bank chosen from patch candidates, with what it cost in coverage."""

    rows: np.ndarray  # flat candidate indices (image * H * W + position), selection order
    global_candidates: int  # candidates the global greedy saw (all, or the per-image union)
    radius: float  # covering radius of the global greedy's candidates (projected space)
    image_radius: float | None  # largest per-image covering radius (two stages), else None

    @property
    def radius_bound(self) -> float:
        """No candidate is farther than this from the bank (triangle inequality)."""
        return self.radius + (self.image_radius or 0.0)


def select_bank(
    patch: np.ndarray, n: int, projection_dim: int, seed: int, room: int, chunk_mb: int = 64
) -> Selection:
    """Greedy k-center bank of ``n`` entries from ``[N, C, H, W]`` patch features (float16 as
    stored), streamed into their random projection one chunk of images at a time.

    One stage when every candidate fits ``room`` (the global greedy's bound, from
    ``PatchcoreParams.sizes``); else each image first keeps the prefix of its own greedy order
    that brings it to one radius shared by all images, the smallest whose prefixes fit ``room``.
    """
    n_img, c, h, w = patch.shape
    hw = h * w
    total = n_img * hw
    n = max(1, min(n, total))
    rng = np.random.default_rng(seed)
    proj = projection(c, projection_dim, rng)
    room = max(n, room)
    step = max(1, (chunk_mb << 20) // (hw * c * 4))
    if total <= room:
        x = np.empty((total, c if proj is None else proj.shape[1]), np.float32)
        for i0 in range(0, n_img, step):
            block = flat_patches(patch[i0 : i0 + step])
            x[i0 * hw : i0 * hw + len(block)] = block if proj is None else block @ proj
        idx, radius = kcenter(x, n, int(rng.integers(total)))
        return Selection(idx, total, radius, None)
    # Stage 1: each image's own greedy order, up to m_max patches, with its covering radius
    # after each; then one radius r for all images, the smallest whose per-image prefixes fit
    # ``room``: images with unusual patches keep more of them.
    m_max = min(hw, max(1, 3 * (room // n_img), math.ceil(n / n_img)))
    log.info(
        "coreset: %d candidates exceed the global greedy's bound (%d); each image is first "
        "reduced by its own greedy k-center (up to %d of %d patches)",
        total,
        room,
        m_max,
        hw,
    )
    firsts = rng.integers(hw, size=n_img)
    order = np.empty((n_img, m_max), np.int32)
    radii = np.empty((n_img, m_max), np.float32)
    out = np.empty(m_max, np.int64)
    progress = Progress(n_img, "coreset: per-image greedy", every=10.0)
    for i0 in range(0, n_img, step):
        block = flat_patches(patch[i0 : i0 + step])
        if proj is not None:
            block = block @ proj
        for k in range(len(block) // hw):
            _kcenter(block[k * hw : (k + 1) * hw], m_max, int(firsts[i0 + k]), out, radii[i0 + k])
            order[i0 + k] = out
        progress.update(len(block) // hw)
    keep = _prefixes(radii, room)
    starts = np.concatenate([[0], np.cumsum(keep)])
    x = np.empty((int(starts[-1]), c if proj is None else proj.shape[1]), np.float32)
    rows = np.empty(len(x), np.int64)
    for i0 in range(0, n_img, step):  # the kept patches, projected again (cheaper than storing)
        i1 = min(n_img, i0 + step)
        sel = np.concatenate([i * hw + order[i, : keep[i]] for i in range(i0, i1)])
        rows[starts[i0] : starts[i1]] = sel
        kept = flat_patches(patch[i0:i1])[sel - i0 * hw]
        x[starts[i0] : starts[i1]] = kept if proj is None else kept @ proj
    image_r2 = float(radii[np.arange(n_img), keep - 1].max())
    log.info(
        "coreset: per-image stage kept %d candidates (%d-%d an image; covering radius %.4g)",
        len(x),
        keep.min(),
        keep.max(),
        np.sqrt(image_r2),
    )
    idx, radius = kcenter(x, n, int(rng.integers(len(x))))
    return Selection(rows[idx], len(x), radius, float(np.sqrt(image_r2)))


def _prefixes(radii: np.ndarray, room: int) -> np.ndarray:
    """Per image (row of non-increasing covering radii), how many of its greedy centres to
    keep: the fewest that bring every image to one shared radius, the smallest radius whose
    total fits ``room`` (every image keeps at least one)."""
    m_max = radii.shape[1]

    def kept(r: float) -> np.ndarray:
        return np.minimum((radii > r).sum(axis=1) + 1, m_max)

    values = np.unique(radii)
    lo, hi = 0, len(values) - 1  # kept(values[hi]) is all ones; find the smallest that fits
    while lo < hi:
        mid = (lo + hi) // 2
        if kept(values[mid]).sum() <= room:
            hi = mid
        else:
            lo = mid + 1
    return kept(values[lo])
