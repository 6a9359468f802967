"""PatchCore prediction speed: test images/s of the delivered path (ONNX backbone + exact
nearest-neighbour search against the memory bank + smoothed maps) with banks of 5k, 50k and
200k entries, against the bare backbone forward on the same images, measured in one run.

    .venv/bin/python bench/score.py [--banks 5000 50000 200000] [--threads 2]

Banks are random subsets of real patch features (battery weld, all splits, mirrored); the test
images are the battery-weld test split (121 images, 224 px).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import onnx_backbone, patch_features, weld_rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--banks", type=int, nargs="+", default=[5000, 50000, 200000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    from defectflow.backends import build
    from defectflow.backends.base import Features
    from defectflow.maps import smooth_maps
    from defectflow.preprocess import preprocess
    from defectflow.threads import set_threads

    set_threads(args.threads)
    rows = weld_rows()
    test = [r["image_path"] for r in rows if r["split"] == "test"]
    feats = patch_features([r["image_path"] for r in rows], flips=True)
    with tempfile.TemporaryDirectory() as tmp:
        bb, pp = onnx_backbone(Path(tmp), threads=args.threads)
        x = np.stack([preprocess(p, pp) for p in test])  # decoding is outside both timings
        bb(x[: args.batch])
        t = time.perf_counter()
        outs = [bb(x[i : i + args.batch]) for i in range(0, len(x), args.batch)]
        backbone_rate = len(x) / (time.perf_counter() - t)
        print(
            f"{len(x)} test images, {pp.image_size} px, {args.threads} threads; bare backbone: {backbone_rate:.1f} img/s"
        )
        print(f"{'bank':>8} {'img/s':>7} {'vs backbone':>12} {'search ms/img':>14}")
        rng = np.random.default_rng(0)
        for size in args.banks:
            pc = build({"backend": "patchcore"})
            pc.bank = np.ascontiguousarray(
                feats[rng.choice(len(feats), size, replace=size > len(feats))]
            )
            pc.grid = np.array([28, 28])
            pc.score(Features(["w"], outs[0][0][:1], outs[0][1][:1]))  # warm
            t = time.perf_counter()
            search = 0.0
            for i in range(0, len(x), args.batch):
                p, e = bb(x[i : i + args.batch])
                s0 = time.perf_counter()
                _, maps = pc.score(Features([str(k) for k in range(len(p))], p, e))
                search += time.perf_counter() - s0
                smooth_maps(maps, pp.out_size, 4.0)
            rate = len(x) / (time.perf_counter() - t)
            print(
                f"{size:>8} {rate:>7.1f} {rate / backbone_rate:>11.2f}x {1000 * search / len(x):>14.1f}"
            )


if __name__ == "__main__":
    main()
