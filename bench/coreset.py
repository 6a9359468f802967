"""PatchCore coreset selection: defectflow's greedy k-center against anomalib 2.7's KCenterGreedy,
on the same projected real patch features (battery weld, mirrored for the larger set), idle and
with the other core busy.

    .venv/bin/python bench/coreset.py [--sizes 50000 200000] [--ratio 0.1]

Both select the same way (farthest point first, from the same start, on the same 128-d random
projection). anomalib's cost per selected point is constant (a full pass over every candidate),
so its rate is measured over its first --anomalib-points points. The physical reference is the
textbook loop's arithmetic, kept x candidates x dim multiply-adds, at the rate a plain
matrix-vector product reaches in numpy/BLAS on this CPU: ours prunes most of that work, so its
'effective' rate can exceed the reference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import busy_core, patch_features, weld_rows


def project(x: np.ndarray, dim: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(
        x @ (rng.standard_normal((x.shape[1], dim), dtype=np.float32) / np.sqrt(dim))
    )


def ours(x: np.ndarray, n: int) -> tuple[float, np.ndarray]:
    from defectflow.models.backends.coreset import greedy_coreset

    greedy_coreset(x[:2000], 10, projection_dim=0)  # compile/load the kernel outside the timing
    t = time.perf_counter()
    idx = greedy_coreset(x, n, projection_dim=0, seed=0)
    return n / (time.perf_counter() - t), idx


def anomalib_rate(x: np.ndarray, n: int, threads: int) -> tuple[float, list[int]]:
    from anomalib.models.components.sampling import KCenterGreedy

    torch.set_num_threads(threads)
    sampler = KCenterGreedy(
        torch.from_numpy(x)[:, :, None], sampling_ratio=n / len(x)
    )  # 3-d: no re-projection
    t = time.perf_counter()
    idx = sampler.select_coreset_idxs()
    return len(idx) / (time.perf_counter() - t), idx


def blas_matvec_rate(x: np.ndarray, reps: int = 50) -> float:
    """Multiply-adds per second of x @ v (what the textbook loop does every iteration)."""
    v = x[0].copy()
    x @ v
    t = time.perf_counter()
    for _ in range(reps):
        x @ v
    return reps * x.size / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[50000, 200000])
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--anomalib-points", type=int, default=400)
    ap.add_argument("--anomalib-threads", type=int, default=2)
    args = ap.parse_args()
    rows = weld_rows()
    feats = patch_features([r["image_path"] for r in rows], flips=True)
    print(
        f"real patch features: {feats.shape[0]} x {feats.shape[1]} (battery weld, all splits, mirrored)"
    )
    rng = np.random.default_rng(0)
    print(
        f"{'candidates':>10} {'load':>5} {'ours pts/s':>11} {'anomalib pts/s':>15} {'ratio':>7} "
        f"{'effective MAC/s':>16} {'vs BLAS matvec':>15}"
    )
    for size in args.sizes:
        x = project(feats[rng.choice(len(feats), size, replace=size > len(feats))])
        n = int(size * args.ratio)
        ref = blas_matvec_rate(x)
        for busy in (False, True):
            with busy_core(busy):
                ours_rate, idx = ours(x, n)
                theirs, their_idx = anomalib_rate(
                    x, min(n, args.anomalib_points), args.anomalib_threads
                )
            same = (
                np.mean(np.asarray(their_idx) == idx[: len(their_idx)])
                if their_idx[0] == idx[0]
                else float("nan")
            )
            effective = ours_rate * size * x.shape[1]
            print(
                f"{size:>10} {'busy' if busy else 'idle':>5} {ours_rate:>11.0f} {theirs:>15.1f} {ours_rate / theirs:>6.1f}x "
                f"{effective:>16.3g} {effective / ref:>14.1f}x"
            )
        print(
            f"{'':>10} BLAS matvec reference: {ref:.3g} multiply-adds/s; the textbook loop at that rate: "
            f"{ref / (size * x.shape[1]):.0f} points/s"
            + (
                f"; same picks as anomalib's first {len(their_idx)}: {same:.3f}"
                if same == same
                else ""
            )
        )


if __name__ == "__main__":
    main()
