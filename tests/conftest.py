"""Shared fixtures: tiny synthetic images and manifests made on the fly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "battery_weld"


def save_image(
    path: Path, seed: int = 0, size: tuple[int, int] = (32, 32), mode: str = "L"
) -> Path:
    """A small random image (distinct content per seed)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(
        0, 256, size=(size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]), dtype=np.uint8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def save_mask(path: Path, size: tuple[int, int] = (32, 32), fill: float = 0.1) -> Path:
    arr = np.zeros((size[1], size[0]), dtype=np.uint8)
    n = int(round(size[1] * fill))
    arr[:n, :] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def mvtec_tree(tmp_path: Path) -> Path:
    """A tiny MVTec layout: 12 train, 3 test good, 3 scratch (with masks), one orphan mask."""
    root = tmp_path / "widget"
    for i in range(12):
        save_image(root / "train" / "good" / f"{i:03d}.png", seed=i)
    for i in range(3):
        save_image(root / "test" / "good" / f"{i:03d}.png", seed=100 + i)
        save_image(root / "test" / "scratch" / f"{i:03d}.png", seed=200 + i)
        save_mask(root / "ground_truth" / "scratch" / f"{i:03d}_mask.png")
    save_mask(root / "ground_truth" / "scratch" / "099_mask.png")
    return root


def small_backbone(folder: Path):
    """The default backbone at 96 px, exported to ONNX in ``folder`` (its card returned)."""
    from defectflow.features.export import run_export_backbone

    cfg = {
        "name": "tf_efficientnet_lite0",
        "weights": "builtin",
        "layers": [2, 3],
        "pool": 3,
        "image_size": 96,
    }
    return run_export_backbone(cfg, folder / "b.onnx", folder / "b.json")


@pytest.fixture
def battery_weld() -> Path:
    if not SHARED.is_dir():
        pytest.skip(
            f"real data not available: {SHARED} is absent (it lives in ../shared beside the checkout)"
        )
    return SHARED


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    """A copy of the workflow (Snakefile, rules, scripts, config, schemas, envs, profiles)."""
    dst = tmp_path / "wf"
    dst.mkdir()
    for name in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    return dst


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The whole chain on the small demo, run once for every test module that reads it."""
    from test_workflow import copy_workflow, snakemake

    wf = copy_workflow(tmp_path_factory.mktemp("e2e") / "wf")
    snakemake(wf)
    return wf
