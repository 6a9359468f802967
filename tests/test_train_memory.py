"""A train job's declared `mem_mb` holds what the job really uses (a scheduler kills a job that
passes it), and grows with the features it loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defectflow.artifacts.embeddings import shard_name, write_shard
from defectflow.artifacts.standardized import write_standardized
from defectflow.memory import train_mem_mb

TRAIN = """
import json, sys
from pathlib import Path
from defectflow.train import run_train
a = json.loads(sys.argv[1])
run_train(a["table"], a["files"], "d", "cat", a["model"], a["params"], 5, a["out"] + "/c.safetensors",
          a["out"] + "/card.json", a["out"] + "/crossfit.parquet", seed=0, threads=1)
# VmHWM: this process's own peak RSS (ru_maxrss would count the parent's size at fork)
print("PEAK_KB", [l.split()[1] for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")][0])
"""


def _data(root: Path, n: int, shard: int, c: int = 64) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    rows = [{
        "image_id": f"cat-{i:05d}", "category": "cat", "split": "val" if i % 10 == 9 else "train",
        "split_assigned": False, "label": "normal", "defect_type": None,
        "image_path": f"/x/{i}.png", "mask_path": None, "rel_path": f"{i}.png",
        "sha256": f"{i:064x}", "width": 224, "height": 224, "channels": 3, "mode": "RGB",
        "bit_depth": 8, "mask_fraction": None, "group_id": None, "source_file": "m.jsonl",
        "source_line": i + 1, "source_type": "manifest",
    } for i in range(n)]  # fmt: skip
    root.mkdir(parents=True)
    table = root / "standardized.parquet"
    write_standardized(table, rows)
    base = rng.standard_normal((c, 28, 28), dtype=np.float32)
    k = -(-n // shard)
    files = []
    for s in range(k):
        part = rows[s * shard : (s + 1) * shard]
        patch = base + 0.3 * rng.standard_normal((len(part), c, 28, 28), dtype=np.float32)
        f = root / f"{shard_name(s, k)}.safetensors"
        write_shard(patch, rng.standard_normal((len(part), 96), dtype=np.float32), part, {}, f,
                    f.with_suffix(".parquet"))  # fmt: skip
        files.append(str(f))
    return table, files


@pytest.mark.parametrize(
    "params",
    [
        {"backend": "knn", "k": 1},
        {"backend": "padim"},
        {"backend": "patchcore", "coreset_ratio": 0.002, "max_memory_mb": 100},
    ],
    ids=["knn", "padim", "patchcore"],
)
def test_declared_train_memory_holds_the_jobs_peak(tmp_path, params):
    table, files = _data(tmp_path / "d", 900, 400)
    declared = train_mem_mb(params, files, fallback=-1)
    assert declared > 0
    out = tmp_path / "out"
    out.mkdir()
    arg = json.dumps({"table": str(table), "files": files, "model": params["backend"],
                      "params": params, "out": str(out)})  # fmt: skip
    r = subprocess.run([sys.executable, "-c", TRAIN, arg], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    peak_mb = int(r.stdout.split("PEAK_KB")[1].split()[0]) / 1024  # the job's own peak RSS
    print(params["backend"], f"peak {peak_mb:.0f} MB, declared {declared} MB")
    assert peak_mb < declared, (peak_mb, declared)
    card = json.loads((out / "card.json").read_text())
    assert card["n_train"] == 810 and card["crossfit"]["val_normals"] == 90


def test_declared_train_memory_grows_with_the_features(tmp_path):
    _, small = _data(tmp_path / "a", 100, 400)
    _, big = _data(tmp_path / "b", 1200, 400)
    for params in ({"backend": "padim"}, {"backend": "patchcore"}):
        assert train_mem_mb(params, big, fallback=-1) > train_mem_mb(params, small, fallback=-1)
    # before the features exist (a dry run ahead of embedding): the rule's fallback
    assert train_mem_mb({"backend": "padim"}, [str(tmp_path / "none.safetensors")], 8000) == 8000
    assert train_mem_mb({"backend": "anomalib", "model": "Padim"}, [], 8000) == 8000
