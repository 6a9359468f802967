"""defectflow's patchcore and padim against anomalib 2.7's Patchcore and Padim on the battery-weld
data: image AUROC, time and peak memory, each variant in its own process.

    .venv/bin/python bench/vs_anomalib.py [--size 224] [--threads 2]

Same images (36 normal train images; 28 normal + 93 defective test images, leaked copies
dropped), same backbone and weights (tf_efficientnet_lite0 with the packaged ImageNet weights,
layers 2+3), same image size and seed. Time = fit (features + model) + scoring the test set.
anomalib runs through its Engine (defectflow's anomalib backend); its Padim is fitted with one
torch thread (its batched linalg.inv is wrong with more on torch 2.14 CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import run_measured, weld_rows

VARIANTS = ["defectflow-patchcore", "anomalib-Patchcore", "defectflow-padim", "anomalib-Padim"]


def run_one(variant: str, size: int, threads: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from defectflow.models.backends import build
    from defectflow.models.backends.base import Features, Images
    from defectflow.threads import set_threads

    set_threads(threads)
    rows = weld_rows()
    train = [r["image_path"] for r in rows if r["split"] in ("train", "val")]
    test = [r for r in rows if r["split"] == "test"]
    labels = [int(r["label"] == "anomaly") for r in test]
    kind, name = variant.split("-")
    t = time.perf_counter()
    if kind == "defectflow":
        from common import onnx_backbone

        from defectflow.features.embeddings import extract

        with tempfile.TemporaryDirectory() as tmp:
            bb, pp = onnx_backbone(Path(tmp), size, threads)  # the backbone export is in the timing
            p, e = extract(bb, train, pp, 16)
            backend = build({"backend": name})
            backend.fit(Features(train, p, e))
            t_fit = time.perf_counter() - t
            tp, te = extract(bb, [r["image_path"] for r in test], pp, 16)
            scores = backend.score(Features([r["image_id"] for r in test], tp, te))[0]
    else:
        init = {"backbone": "tf_efficientnet_lite0", "layers": [2, 3]}
        init |= {"n_features": 152} if name == "Padim" else {"coreset_sampling_ratio": 0.1}
        backend = build({"backend": "anomalib", "model": name, "init": init, "batch_size": 16})
        backend.fit(Images(train, train, size))
        t_fit = time.perf_counter() - t
        paths = [r["image_path"] for r in test]
        scores = [
            s
            for i in range(0, len(paths), 16)
            for s in backend.score(Images(paths[i : i + 16], paths[i : i + 16], size))[0]
        ]
    total = time.perf_counter() - t
    return {
        "variant": variant,
        "auroc": float(roc_auc_score(labels, scores)),
        "fit_s": t_fit,
        "fit_test_s": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_train": len(train),
        "n_test": len(test),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--max-mb", type=int, default=12000, help="stop a variant whose memory passes this"
    )
    ap.add_argument(
        "--attempts", type=int, default=2, help="tries per variant (anomalib's coreset can blow up)"
    )
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.size, args.threads)))
        return
    results = {}
    for v in VARIANTS:
        r = run_measured(
            [
                sys.executable,
                __file__,
                "--one",
                v,
                "--size",
                str(args.size),
                "--threads",
                str(args.threads),
            ],
            max_mb=args.max_mb,
        )
        line = next((x for x in r["output"].splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(
                f"{v}: "
                + (
                    f"stopped at {r['peak_mb']:.0f} MB"
                    if r["killed"]
                    else "failed:\n" + r["output"][-2000:]
                )
            )
            continue
        results[v] = json.loads(line[7:])
    first = next(iter(results.values()), None)
    if first:
        print(
            f"battery weld: {first['n_train']} train, {first['n_test']} test images, {args.size}px, {args.threads} threads"
        )
    print(f"{'variant':<22} {'image AUROC':>11} {'fit s':>7} {'fit+test s':>10} {'peak MB':>8}")
    for v, r in results.items():
        print(
            f"{v:<22} {r['auroc']:>11.4f} {r['fit_s']:>7.1f} {r['fit_test_s']:>10.1f} {r['peak_rss_mb']:>8.0f}"
        )
    for ours, theirs in (
        ("defectflow-patchcore", "anomalib-Patchcore"),
        ("defectflow-padim", "anomalib-Padim"),
    ):
        if ours in results and theirs in results:
            a, b = results[ours], results[theirs]
            print(
                f"{ours} vs {theirs}: AUROC {a['auroc'] - b['auroc']:+.4f}, time ratio (anomalib/ours) "
                f"{b['fit_test_s'] / a['fit_test_s']:.2f}x, peak memory ratio {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x"
            )


if __name__ == "__main__":
    main()
