"""The PatchCore coreset and exact nearest-neighbour search in torch on a CUDA device, with the
CPU versions' semantics (same projection, same first centre, exact distances)."""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)


def greedy_coreset_cuda(x: np.ndarray, n: int, first: int) -> tuple[np.ndarray, float]:
    """Greedy k-center on already projected rows ``x``, starting at row ``first``: (indices,
    covering radius)."""
    # lazy: torch (seconds to import) only where a network runs or is exported
    import torch

    t = time.perf_counter()
    xs = torch.from_numpy(np.ascontiguousarray(x, np.float32)).cuda()
    out = np.empty(n, dtype=np.int64)
    mind = torch.full((len(xs),), float("inf"), device=xs.device)
    idx = first
    for i in range(n):
        out[i] = idx
        d = ((xs - xs[idx]) ** 2).sum(1)
        torch.minimum(mind, d, out=mind)
        idx = int(torch.argmax(mind))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    log.info(
        "coreset (cuda): %d of %d candidates in %.1f s (%.0f points/s)",
        n,
        len(x),
        dt,
        n / max(dt, 1e-9),
    )
    return out, float(mind.max().clamp_min(0).sqrt())


def nearest_sq_distances_cuda(query: np.ndarray, bank: np.ndarray, block: int = 4096) -> np.ndarray:
    """Exact squared distance of each query row to its nearest bank row."""
    # lazy: torch (seconds to import) only where a network runs or is exported
    import torch

    b = torch.from_numpy(np.ascontiguousarray(bank, np.float32)).cuda()
    b_sq = (b * b).sum(1)
    out = []
    for s in range(0, len(query), block):
        q = torch.from_numpy(np.ascontiguousarray(query[s : s + block], np.float32)).cuda()
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * q @ b.T + b_sq[None, :]
        out.append(d2.min(1).values.clamp_min_(0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
