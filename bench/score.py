"""Scoring speed and what the default search costs in accuracy, measured in one run.

    .venv/bin/python bench/score.py [--banks 5000 50000 200000] [--knn-banks 100000]
                                    [--threads 2] [--skip-accuracy] [--skip-speed]
                                    [--demo-train 500]

1. Speed: test images/s of the delivered PatchCore path (ONNX backbone + nearest-neighbour
   search against the memory bank + smoothed maps) with banks of 5k, 50k and 200k entries, with
   `search: exact` and with the default (`auto`: the IVF index from 10k entries), against the
   bare backbone forward on the same images. Banks are random subsets of real patch features
   (battery weld, all splits, mirrored); the test images are the battery-weld test split.
   kNN the same way on image embeddings, with a 100,000-image bank.
2. Accuracy: the default chain's PatchCore fitted with `coreset_ratio: 1.0` (banks of 28k
   entries on battery weld, 47k on the demo categories) and scored once with `search: exact`
   and once with `search: ivf`, in one `snakemake` run per dataset (shared embeddings): image
   AUROC, pixel AUROC and AUPRO of both, and their differences. `--demo-train N` adds the demo
   texture with N training images at the default coreset ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import REPO, WELD, onnx_backbone, patch_features, weld_rows


def _rate(model, bb, x, batch, pp, with_maps: bool) -> tuple[float, float]:
    """(images/s of backbone + scoring (+ maps), search ms per image)."""
    from defectflow.deploy.maps import smooth_maps
    from defectflow.models.backends.base import Features

    t = time.perf_counter()
    search = 0.0
    for i in range(0, len(x), batch):
        p, e = bb(x[i : i + batch])
        s0 = time.perf_counter()
        _, maps = model.score(Features([str(k) for k in range(len(p))], p, e))
        search += time.perf_counter() - s0
        if with_maps:
            smooth_maps(maps, pp.out_size, 4.0)
    return len(x) / (time.perf_counter() - t), 1000 * search / len(x)


def speed(args: argparse.Namespace) -> None:
    from defectflow.features.preprocess import preprocess
    from defectflow.models.backends import build
    from defectflow.models.backends.base import Features
    from defectflow.models.backends.ivf import IvfIndex, default_lists

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
            f"{len(x)} test images, {pp.image_size} px, {args.threads} threads; bare backbone: "
            f"{backbone_rate:.1f} img/s"
        )
        print(
            f"{'model':<10} {'bank':>8} {'search':<8} {'img/s':>7} {'vs backbone':>12} "
            f"{'search ms/img':>14}"
        )
        rng = np.random.default_rng(0)
        for size in args.banks:
            bank = np.ascontiguousarray(
                feats[rng.choice(len(feats), size, replace=size > len(feats))]
            )
            for search in ("exact", "auto"):
                pc = build({"backend": "patchcore", "search": search})
                pc.bank, pc.grid, pc.source = bank, np.array([28, 28]), np.zeros(size, np.int32)
                if pc.search_method(size) == "ivf":
                    pc.index = IvfIndex.build(bank, default_lists(size))
                pc.score(Features(["w"], outs[0][0][:1], outs[0][1][:1]))  # warm
                rate, ms = _rate(pc, bb, x, args.batch, pp, True)
                label = search if search == "exact" else f"{pc.search_method(size)} (default)"
                print(
                    f"{'patchcore':<10} {size:>8} {label:<8} {rate:>7.1f} "
                    f"{rate / backbone_rate:>11.2f}x {ms:>14.1f}"
                )
        emb = outs[0][1]
        for size in args.knn_banks:
            knn = build({"backend": "knn"})
            base = rng.standard_normal((size, emb.shape[1])).astype(np.float32)
            knn.bank = base / np.linalg.norm(base, axis=1, keepdims=True)
            knn.score(Features(["w"], outs[0][0][:1], emb[:1]))
            rate, ms = _rate(knn, bb, x, args.batch, pp, False)
            print(
                f"{'knn':<10} {size:>8} {'exact':<8} {rate:>7.1f} {rate / backbone_rate:>11.2f}x "
                f"{ms:>14.1f}"
            )


def accuracy(args: argparse.Namespace) -> None:
    def models(ratio: float) -> dict:
        return {
            f"pc_{s}": {"backend": "patchcore", "coreset_ratio": ratio, "search": s}
            for s in ("exact", "ivf")
        }

    runs = {
        "battery weld": (
            {
                "weld": {
                    "sources": [
                        {
                            "type": "manifest",
                            "path": str(WELD / "train_welding.json"),
                            "split": "train",
                        },
                        {
                            "type": "manifest",
                            "path": str(WELD / "test_welding.json"),
                            "split": "test",
                        },
                    ]
                },
                "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            },
            {"severity": {"LEAKAGE_EXACT": "warning"}},
            models(1.0),
            {},
        ),
        "demo": ({"demo": {"sources": [{"type": "demo"}]}}, {}, models(1.0), {}),
    }
    if args.demo_train:  # a texture of several hundred images, at the default coreset ratio
        runs[f"tile x{args.demo_train}"] = (
            {"demo": {"sources": [{"type": "demo"}]}},
            {},
            models(0.1),
            {
                "n_train": args.demo_train,
                "n_test_normal": 40,
                "n_test_per_defect": 15,
                "categories": ["tile"],
            },
        )
    print(
        f"\n{'data':<13} {'category':<9} {'bank':>6} {'search':<6} {'image AUROC':>11} "
        f"{'pixel AUROC':>11} {'AUPRO':>7}"
    )
    for name, (datasets, preflight, pcs, demo) in runs.items():
        if args.accuracy_on and not any(name.startswith(a) for a in args.accuracy_on):
            continue
        if name == "battery weld" and not WELD.is_dir():
            print(f"{name}: data not found at {WELD}; skipped")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            wf = Path(tmp)
            for part in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
                (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, wf / part)
            cfg = yaml.safe_load((wf / "config/config.yaml").read_text())
            cfg["datasets"], cfg["models"] = datasets, pcs
            cfg["preflight"].update(preflight)
            cfg["demo"].update(demo)
            (wf / "config/config.yaml").write_text(yaml.safe_dump(cfg))
            r = subprocess.run(
                [sys.executable, "-m", "snakemake", "--cores", str(args.threads)],
                cwd=wf,
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                sys.exit(f"{name}: the chain failed:\n{r.stderr[-3000:]}")
            for ds in sorted(d.parent.parent for d in (wf / "results").glob("*/models/pc_exact")):
                for cat in sorted(p.name for p in (ds / "models/pc_exact").iterdir()):
                    got = {}
                    for m in pcs:
                        met = json.loads((ds / "models" / m / cat / "metrics.json").read_text())
                        card = json.loads((ds / "models" / m / cat / "model_card.json").read_text())
                        got[m] = (
                            met["image"]["auroc"],
                            met["pixel"].get("auroc"),
                            met["pixel"].get("aupro"),
                            card["facts"]["bank_size"],
                        )
                        print(
                            f"{name:<13} {cat:<9} {got[m][3]:>6} {m[3:]:<6} {got[m][0]:>11.4f} "
                            f"{_f(got[m][1]):>11} {_f(got[m][2]):>7}"
                        )
                    diff = [
                        None if a is None else abs(a - b)
                        for a, b in zip(got["pc_ivf"][:3], got["pc_exact"][:3], strict=True)
                    ]
                    print(
                        f"{'':<13} {cat:<9} {'':>6} {'|diff|':<6} {_f(diff[0]):>11} "
                        f"{_f(diff[1]):>11} {_f(diff[2]):>7}   (targets: 0.002, 0.005, -)"
                    )


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--banks", type=int, nargs="+", default=[5000, 50000, 200000])
    ap.add_argument("--knn-banks", type=int, nargs="*", default=[100000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--accuracy-on", nargs="*", help="only these runs: battery, demo, tile")
    ap.add_argument(
        "--demo-train",
        type=int,
        default=0,
        help="also the demo texture with this many training images (default ratio)",
    )
    args = ap.parse_args()

    from defectflow.threads import set_threads

    set_threads(args.threads)
    if not args.skip_speed:
        speed(args)
    if not args.skip_accuracy:
        accuracy(args)


if __name__ == "__main__":
    main()
