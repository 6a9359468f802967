"""Helpers shared by the benchmarks: the battery-weld image lists, features through the ONNX
backbone, a busy core, and a child process whose peak memory (process tree) is measured."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WELD = REPO.parent / "shared" / "data" / "battery_weld"


def workflow_copy(dst: Path, data: str = "demo") -> dict:
    """A fresh copy of the workflow in ``dst`` and its config (to edit and write back); with
    ``data="weld"`` the config runs battery weld alone (its 7 leaked test copies as a warning:
    standardize drops them)."""
    import shutil

    import yaml

    dst.mkdir(parents=True)
    for name in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dst / name)
    cfg = yaml.safe_load((dst / "config" / "config.yaml").read_text())
    if data == "weld":
        if not WELD.is_dir():
            sys.exit(f"battery-weld data not found at {WELD} (it lives in ../shared)")
        cfg["datasets"] = {
            "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            "weld": {
                "sources": [
                    {
                        "type": "manifest",
                        "path": str(WELD / "train_welding.json"),
                        "split": "train",
                    },
                    {"type": "manifest", "path": str(WELD / "test_welding.json"), "split": "test"},
                ]
            },
        }
        cfg["preflight"]["severity"] = {"LEAKAGE_EXACT": "warning"}
    return cfg


def weld_rows(data: Path = WELD) -> list[dict]:
    """Standardized rows of the battery-weld data (leaked test copies dropped), in the data's own
    train/test split: nothing held out as val, so `split != "test"` is the training set."""
    from defectflow.config import DatasetConfig, PreflightConfig, SplitConfig
    from defectflow.data.ingest import ingest_sources
    from defectflow.data.preflight import preflight_records
    from defectflow.data.standardize import standardize_records

    if not data.is_dir():
        sys.exit(
            f"battery-weld data not found at {data} (it lives in ../shared beside the checkout)"
        )
    ds = DatasetConfig.model_validate(
        {
            "sources": [
                {"type": "manifest", "path": str(data / "train_welding.json"), "split": "train"},
                {"type": "manifest", "path": str(data / "test_welding.json"), "split": "test"},
            ]
        }
    )
    recs = ingest_sources(ds.sources, "weld")
    _, facts = preflight_records(recs, PreflightConfig(threads=2), "weld", "m")
    return standardize_records(recs, facts, SplitConfig(val_fraction=0.0, val_from_test=0.0))


def onnx_backbone(tmp: Path, image_size: int = 224, threads: int = 2):
    """(backbone, preprocess spec) of the default backbone, exported into ``tmp``."""
    from defectflow.features.export import run_export_backbone
    from defectflow.features.onnx_runtime import OnnxBackbone
    from defectflow.features.preprocess import PreprocessSpec

    cfg = {
        "name": "tf_efficientnet_lite0",
        "weights": "builtin",
        "layers": [2, 3],
        "pool": 3,
        "image_size": image_size,
    }
    card = run_export_backbone(cfg, tmp / "b.onnx", tmp / "b.json")
    return OnnxBackbone(tmp / "b.onnx", threads=threads), PreprocessSpec.model_validate(
        card.preprocess
    )


def patch_features(paths: list[str], image_size: int = 224, flips: bool = False) -> np.ndarray:
    """Real patch features ``[N*H*W, C]`` of images (optionally with their mirror images)."""
    from defectflow.features.embeddings import extract

    with tempfile.TemporaryDirectory() as tmp:
        bb, pp = onnx_backbone(Path(tmp), image_size)
        p, _ = extract(bb, paths, pp, 16)
    if flips:
        p = np.concatenate([p, p[..., ::-1]])
    return np.ascontiguousarray(p.transpose(0, 2, 3, 1).reshape(-1, p.shape[1]))


@contextlib.contextmanager
def busy_core(on: bool = True) -> Iterator[None]:
    """A process spinning on one core for the duration (the 'other core is busy' case)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def _tree_rss_kb(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, StopIteration, ValueError):
            total += next(
                int(x.split()[1])
                for x in Path(f"/proc/{p}/status").read_text().splitlines()
                if x.startswith("VmRSS")
            )
        with contextlib.suppress(OSError):
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
    return total


def run_measured(
    cmd: list[str], cwd: Path | None = None, max_mb: float = 16000, env: dict | None = None
) -> dict:
    """Run ``cmd``; return wall seconds, peak RSS of its whole process tree (MB), exit code, output.
    Killed if the tree passes ``max_mb``."""
    with tempfile.TemporaryFile(mode="w+") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env
        )
        peak, killed = 0.0, False
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kb(proc.pid) / 1024)
            if peak > max_mb:
                proc.kill()
                killed = True
            time.sleep(0.1)
        wall = time.perf_counter() - t
        out.seek(0)
        return {
            "wall_s": wall,
            "peak_mb": peak,
            "rc": proc.returncode,
            "killed": killed,
            "output": out.read(),
        }
