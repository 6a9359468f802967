"""Train jobs at scale: peak memory of a real `train` job (stored features loaded, fit, cross-fit,
val scored, checkpoint written) for each default model on N images of one category, against the
`mem_mb` the workflow declares for that job (the same function the rule calls) and against the
size of the stored features it reads, measured in one run.

    .venv/bin/python bench/train_memory.py [--images 2000 10000 20000] [--coreset-ratio 0.001]

The features are synthetic (the default backbone's shapes: patch float16 [152, 28, 28],
embedding [472]) in shards of `backbone.shard_size` images, 10% of the images held out as val.
PatchCore's coreset ratio is small by default: the coreset's time grows with kept x candidates,
and the memory is the point here (its bank is counted at the configured ratio in `mem_mb`).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, nargs="+", default=[2000, 10000, 20000])
    ap.add_argument("--coreset-ratio", type=float, default=0.001)
    ap.add_argument("--models", nargs="+", default=["knn", "patchcore", "padim"])
    args = ap.parse_args()

    from defectflow.config import parse_config
    from defectflow.models.memory import measure_train, synthetic_train_data, train_mem_mb

    cfg = parse_config({"datasets": {"big": {"sources": [{"type": "demo"}]}}})
    print(
        f"{'model':<10} {'images':>7} {'features MB':>12} {'peak MB':>8} {'mem_mb':>7} "
        f"{'peak/mem_mb':>11} {'peak/features':>13} {'wall s':>7}"
    )
    for n in args.images:
        root = Path(tempfile.mkdtemp(prefix="df-trainmem-"))
        try:
            table, files = synthetic_train_data(root, n, cfg.backbone.shard_size)
            feat_mb = sum(Path(f).stat().st_size for f in files) / 2**20
            for name in args.models:
                params = cfg.models[name].model_dump(mode="json")
                declared = train_mem_mb(params, files, fallback=0)
                if name == "patchcore":
                    params["coreset_ratio"] = args.coreset_ratio
                t = time.perf_counter()
                peak = measure_train(table, files, params, root / name, threads=2)
                print(
                    f"{name:<10} {n:>7} {feat_mb:>12,.0f} {peak:>8,.0f} {declared:>7} "
                    f"{peak / declared:>11.2f} {peak / feat_mb:>13.2f} "
                    f"{time.perf_counter() - t:>7.0f}"
                )
        finally:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
