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
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import run_measured

TRAIN = """
import json, sys
from defectflow.train import run_train
a = json.loads(sys.argv[1])
run_train(a["table"], a["files"], "big", "cat", a["model"], a["params"], 5, a["out"] + "/c.safetensors",
          a["out"] + "/card.json", a["out"] + "/crossfit.parquet", seed=0, threads=2)
print("TRAINED")
"""


def make_data(root: Path, n: int, shard_size: int) -> tuple[Path, list[str]]:
    from defectflow.artifacts.embeddings import shard_name, write_shard
    from defectflow.artifacts.standardized import write_standardized

    rng = np.random.default_rng(0)
    rows = [{
        "image_id": f"cat-{i:06d}", "category": "cat", "split": "val" if i % 10 == 9 else "train",
        "split_assigned": False, "label": "normal", "defect_type": None,
        "image_path": f"/nowhere/{i}.png", "mask_path": None, "rel_path": f"{i}.png",
        "sha256": f"{i:064x}", "width": 224, "height": 224, "channels": 3, "mode": "RGB",
        "bit_depth": 8, "mask_fraction": None, "group_id": None, "source_file": "m.jsonl",
        "source_line": i + 1, "source_type": "manifest",
    } for i in range(n)]  # fmt: skip
    table = root / "standardized.parquet"
    write_standardized(table, rows)
    base = rng.standard_normal((152, 28, 28), dtype=np.float32)
    k = -(-n // shard_size)
    files = []
    for s in range(k):
        part = rows[s * shard_size : (s + 1) * shard_size]
        patch = base + 0.3 * rng.standard_normal((len(part), 152, 28, 28), dtype=np.float32)
        image = rng.standard_normal((len(part), 472), dtype=np.float32)
        f = root / f"{shard_name(s, k)}.safetensors"
        write_shard(patch, image, part, {}, f, f.with_suffix(".parquet"))
        files.append(str(f))
    return table, files


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, nargs="+", default=[2000, 10000, 20000])
    ap.add_argument("--coreset-ratio", type=float, default=0.001)
    ap.add_argument("--models", nargs="+", default=["knn", "patchcore", "padim"])
    args = ap.parse_args()

    from defectflow.config import parse_config
    from defectflow.memory import train_mem_mb

    cfg = parse_config({"datasets": {"big": {"sources": [{"type": "demo"}]}}})
    print(f"{'model':<10} {'images':>7} {'features MB':>12} {'peak MB':>8} {'mem_mb':>7} "
          f"{'peak/mem_mb':>11} {'peak/features':>13} {'wall s':>7}")  # fmt: skip
    for n in args.images:
        root = Path(tempfile.mkdtemp(prefix="df-trainmem-"))
        try:
            table, files = make_data(root, n, cfg.backbone.shard_size)
            feat_mb = sum(Path(f).stat().st_size for f in files) / 2**20
            for name in args.models:
                params = cfg.models[name].model_dump(mode="json")
                declared = train_mem_mb(params, files, fallback=0)
                if name == "patchcore":
                    params["coreset_ratio"] = args.coreset_ratio
                out = root / name
                out.mkdir()
                arg = json.dumps({"table": str(table), "files": files, "model": name,
                                  "params": params, "out": str(out)})  # fmt: skip
                res = run_measured([sys.executable, "-c", TRAIN, arg], max_mb=22000)
                ok = res["rc"] == 0 and "TRAINED" in res["output"]
                print(f"{name:<10} {n:>7} {feat_mb:>12,.0f} {res['peak_mb']:>8,.0f} {declared:>7} "
                      f"{res['peak_mb'] / declared:>11.2f} {res['peak_mb'] / feat_mb:>13.2f} "
                      f"{res['wall_s']:>7.0f}" + ("" if ok else "  FAILED: " + res["output"][-500:]))  # fmt: skip
        finally:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
