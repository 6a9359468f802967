"""Could exact pruning speed up PatchCore's nearest-neighbour search? The share of a 50k-entry
memory bank that exact triangle-inequality bounds leave to compare, per query and per block of
queries, against brute force (1.0, every entry), on real features; and the brute-force matrix
product's speed against this CPU's BLAS on the same shapes.

    .venv/bin/python bench/nn_pruning.py [--bank 50000] [--clusters 128 256 512]

Bank: battery-weld training patches with their mirror images, a random 50k of them. Queries: the
test patches of 8 images. Bounds: the bank in k-means clusters (centre, radius); a query's upper
bound is its exact distance to the nearest of `--reps` random bank entries; a cluster must be
compared when |q - centre| - radius <= that bound. Blocks: 64 or 256 queries sorted by nearest
centre (a block's matrix product needs the union of its queries' clusters).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import patch_features, weld_rows


def _sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None], 0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bank", type=int, default=50000)
    ap.add_argument("--clusters", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--reps", type=int, default=4096)
    args = ap.parse_args()

    from defectflow.models.backends.base import nearest_sq_distances
    from defectflow.threads import set_threads

    set_threads(2)
    rows = weld_rows()
    train = patch_features([r["image_path"] for r in rows if r["split"] != "test"], flips=True)
    test = patch_features([r["image_path"] for r in rows if r["split"] == "test"][:8])
    rng = np.random.default_rng(0)
    bank = np.ascontiguousarray(train[rng.choice(len(train), args.bank, args.bank > len(train))])
    q = np.ascontiguousarray(test)
    out = np.empty((len(q), len(bank)), np.float32)
    np.matmul(q, bank.T, out=out)
    t = time.perf_counter()
    np.matmul(q, bank.T, out=out)
    mm = time.perf_counter() - t
    nearest_sq_distances(q, bank)
    t = time.perf_counter()
    nearest_sq_distances(q, bank)
    brute = time.perf_counter() - t
    flop = 2 * q.shape[0] * bank.shape[0] * bank.shape[1]
    print(
        f"{len(q)} queries x {len(bank)} entries x {bank.shape[1]} dims: one matrix product "
        f"{flop / mm / 1e9:.0f} GFLOP/s; our blocked exact search {1000 * brute / 8:.1f} ms per "
        f"image ({mm / brute:.2f}x the bare product's speed)"
    )
    reps = bank[rng.choice(len(bank), args.reps, replace=False)]
    ub = np.sqrt(_sq(q, reps).min(1))
    print(
        f"{'clusters':>8} {'per query':>10} {'block 64':>9} {'block 256':>10}  (share of the "
        "bank compared; brute force 1.00)"
    )
    for k in args.clusters:
        sample = bank[rng.choice(len(bank), min(len(bank), 20 * k), replace=False)]
        centres = sample[:k].copy()
        for _ in range(8):  # Lloyd on a sample
            a = _sq(sample, centres).argmin(1)
            for j in range(k):
                if (a == j).any():
                    centres[j] = sample[a == j].mean(0)
        a = _sq(bank, centres).argmin(1)
        radius = np.zeros(k)
        np.maximum.at(radius, a, np.sqrt(((bank - centres[a]) ** 2).sum(1)))
        sizes = np.bincount(a, minlength=k)
        dq = np.sqrt(_sq(q, centres))
        must = dq - radius[None] <= ub[:, None] * 1.0001
        per_query = (must * sizes).sum(1).mean() / len(bank)
        order = np.argsort(dq.argmin(1), kind="stable")
        shares = []
        for block in (64, 256):
            total = sum(
                (must[order[s : s + block]].any(0) * sizes).sum() * len(order[s : s + block])
                for s in range(0, len(q), block)
            )
            shares.append(total / (len(q) * len(bank)))
        print(f"{k:>8} {per_query:>10.2f} {shares[0]:>9.2f} {shares[1]:>10.2f}")


if __name__ == "__main__":
    main()
