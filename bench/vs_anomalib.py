"""defectflow's patchcore and padim vs anomalib's Patchcore and Padim on the battery-weld data.

    .venv/bin/python bench/vs_anomalib.py [--data ../shared/data/battery_weld] [--size 224] [--threads 2]

Same images (36 normal train images; 28 normal + 93 defective test images, leaked copies
dropped), same backbone and weights (tf_efficientnet_lite0 with the packaged ImageNet weights,
layers 2+3), same image size and seed. Each variant runs in its own process, so the peak memory
(max RSS) printed is that variant's alone. Time = fit (features + model) + scoring the test set.
anomalib's Padim is fitted with one torch thread: its batched linalg.inv is wrong with more on
torch 2.14 CPU (our padim uses a Cholesky inverse and any thread count).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["defectflow-patchcore", "anomalib-Patchcore", "defectflow-padim", "anomalib-Padim"]


def split_lists(data: Path) -> tuple[list[str], list[str], list[int]]:
    from defectflow.config import DatasetConfig, PreflightConfig, SplitConfig
    from defectflow.ingest import ingest_sources
    from defectflow.preflight import preflight_records
    from defectflow.standardize import standardize_records

    ds = DatasetConfig.model_validate({"sources": [
        {"type": "manifest", "path": str(data / "train_welding.json"), "split": "train"},
        {"type": "manifest", "path": str(data / "test_welding.json"), "split": "test"},
    ]})  # fmt: skip
    recs = ingest_sources(ds.sources, "weld")
    _, facts = preflight_records(recs, PreflightConfig(threads=2), "weld", "m")
    rows = standardize_records(recs, facts, SplitConfig(val_fraction=0.0))
    train = [r["image_path"] for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    return train, [r["image_path"] for r in test], [int(r["label"] == "anomaly") for r in test]


def run_one(variant: str, data: Path, size: int, threads: int) -> dict:
    import torch
    from sklearn.metrics import roc_auc_score

    from defectflow.preprocess import load_rgb

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train, test, labels = split_lists(data)
    import anomalib.models  # noqa: F401 - imports are not part of the timing, for both sides
    import defectflow.backends.anomalib_backend  # noqa: F401
    import timm  # noqa: F401

    import defectflow.backbone  # noqa: F401

    t = time.perf_counter()
    if variant.startswith("defectflow"):
        from defectflow.backbone import BackboneSpec, build_extractor
        from defectflow.backends import EMBEDDING_BACKENDS
        from defectflow.embeddings import extract
        from defectflow.preprocess import PreprocessSpec

        name = variant.split("-")[1]
        model, _ = build_extractor(BackboneSpec())
        pp = PreprocessSpec(image_size=size)
        patch, image = extract(model, train, pp, 16)
        backend = EMBEDDING_BACKENDS[name]({})
        backend.fit(patch.float(), image, seed=0)
        t_fit = time.perf_counter() - t
        tp, ti = extract(model, test, pp, 16)
        scores = backend.score(tp.float(), ti)[0].numpy()
    else:
        from defectflow.backends.anomalib_backend import AnomalibRunner, train_anomalib

        name = variant.split("-")[1]
        init = {"backbone": "tf_efficientnet_lite0", "layers": [2, 3]}
        if name == "Padim":
            init["n_features"] = 152  # (train_anomalib fits PaDiM single-threaded: see its comment)
        else:
            init["coreset_sampling_ratio"] = 0.1
        module, _ = train_anomalib(
            train, name, init, size, [0.5] * 3, [0.5] * 3, max_epochs=1, batch_size=16, seed=0
        )
        t_fit = time.perf_counter() - t
        runner = AnomalibRunner(module, size)
        scores = torch.cat(
            [
                runner.score_images([load_rgb(p) for p in test[i : i + 16]])[0]
                for i in range(0, len(test), 16)
            ]
        ).numpy()
    total = time.perf_counter() - t
    return {"variant": variant, "auroc": float(roc_auc_score(labels, scores)), "fit_s": t_fit, "fit_test_s": total,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n_train": len(train), "n_test": len(test)}  # fmt: skip


def run_capped(variant: str, args: argparse.Namespace) -> tuple[str, float, bool]:
    """Run one variant in a child process; stop it if its RSS passes ``--max-mb`` (anomalib's
    PatchCore coreset can grow without bound and would take the machine down)."""
    cmd = [
        sys.executable,
        __file__,
        "--one",
        variant,
        "--data",
        str(args.data),
        "--size",
        str(args.size),
        "--threads",
        str(args.threads),
    ]
    with tempfile.TemporaryFile(mode="w+") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.DEVNULL, text=True)
        peak, killed = 0.0, False
        while proc.poll() is None:
            try:
                rss = next(
                    int(x.split()[1])
                    for x in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if x.startswith("VmRSS")
                )
            except (OSError, StopIteration):
                rss = 0
            peak = max(peak, rss / 1024)
            if peak > args.max_mb:
                proc.kill()
                killed = True
            time.sleep(0.2)
        fh.seek(0)
        return fh.read(), peak, killed


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "battery_weld")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--max-mb", type=int, default=12000, help="stop a variant whose memory passes this"
    )
    ap.add_argument("--attempts", type=int, default=2, help="tries per variant")
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.data, args.size, args.threads)))
        return
    if not args.data.is_dir():
        sys.exit(f"battery-weld data not found at {args.data}")
    results = {}
    for v in VARIANTS:
        for attempt in range(1, args.attempts + 1):
            out, peak, killed = run_capped(v, args)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            if line is not None:
                results[v] = json.loads(line[7:])
                break
            why = f"stopped at {peak:.0f} MB RSS (cap {args.max_mb} MB)" if killed else "failed"
            print(f"{v}: attempt {attempt} {why}")
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
            print(f"{ours} vs {theirs}: AUROC {a['auroc'] - b['auroc']:+.4f}, time ratio (anomalib/ours) {b['fit_test_s'] / a['fit_test_s']:.2f}x, "
                  f"peak memory ratio {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
