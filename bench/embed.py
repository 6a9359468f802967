"""Embedding throughput: the pipeline's path (decode + preprocess + ONNX backbone in onnxruntime +
fp16 rounding) vs a bare timm (torch) forward of the same backbone and batch on tensors already
in memory.

    .venv/bin/python bench/embed.py [--n 256] [--batch 16] [--threads 2] [--size 224]

The ratio pipeline/bare should approach 1: the forward pass dominates, not our code around it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224, help="model input side")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image-side", type=int, default=256, help="side of the PNG files on disk")
    args = ap.parse_args()

    import timm
    from common import onnx_backbone

    from defectflow.features.embeddings import extract

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.n):
            p = Path(tmp) / f"{i:05d}.png"
            Image.fromarray(
                rng.integers(0, 256, (args.image_side, args.image_side, 3), dtype=np.uint8)
            ).save(p, compress_level=1)
            paths.append(str(p))
        model, pp = onnx_backbone(Path(tmp), image_size=args.size, threads=args.threads)
        bare = timm.create_model(
            "tf_efficientnet_lite0", features_only=True, out_indices=(2, 3, 4)
        ).eval()
        x = torch.randn(args.batch, 3, args.size, args.size)
        extract(model, paths[: args.batch], pp, args.batch)  # warm-up
        with torch.no_grad():
            bare(x)
        t_pipe, t_bare = float("inf"), float("inf")
        for _ in range(
            args.rounds
        ):  # interleaved rounds, best of each: the machine is shared and noisy
            t = time.perf_counter()
            extract(model, paths, pp, args.batch)
            t_pipe = min(t_pipe, time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                for _ in range(0, args.n, args.batch):
                    bare(x)
            t_bare = min(t_bare, time.perf_counter() - t)
    n = args.n
    print(
        f"images: {n}, batch {args.batch}, {args.threads} threads, input {args.size}px (files {args.image_side}px PNG)"
    )
    print(f"bare timm (torch) forward (tensors in memory): {n / t_bare:7.1f} img/s")
    print(f"defectflow embedding (files -> fp16 patch + image features): {n / t_pipe:7.1f} img/s")
    print(f"ratio pipeline / bare: {t_bare / t_pipe:.2f}")


if __name__ == "__main__":
    main()
