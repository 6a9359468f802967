"""The CUDA path (`backbone.device: cuda|auto`): runs where torch sees a GPU, and says so when
skipped. CI has no GPU; the device plumbing itself is checked on the CPU below."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from defectflow import device
from defectflow.errors import ModelError


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


needs_gpu = pytest.mark.skipif(
    not _cuda(),
    reason="no CUDA device here (torch.cuda.is_available() is False); "
    "the CUDA path runs on a GPU machine",
)


def test_auto_picks_the_cpu_without_importing_torch_where_there_is_no_gpu():
    if device._nvidia_present():
        pytest.skip("this machine has an NVIDIA driver")
    code = "import sys; from defectflow import device; print(device.resolve('auto'), 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["cpu", "False"]


def test_cuda_asked_without_a_gpu_is_a_clear_error():
    if _cuda():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ModelError, match="torch sees no CUDA device"):
        device.resolve("cuda")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        device.resolve("tpu")


@needs_gpu
def test_cuda_nearest_neighbours_are_exact():
    from defectflow.models.backends.base import nearest_sq_distances

    rng = np.random.default_rng(0)
    q, bank = (
        rng.standard_normal((3000, 152), np.float32),
        rng.standard_normal((20000, 152), np.float32),
    )
    device.use("cpu")
    ref = nearest_sq_distances(q, bank)
    device.use("cuda")
    try:
        got = nearest_sq_distances(q, bank)
    finally:
        device.use("cpu")
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


@needs_gpu
def test_cuda_coreset_covers_like_the_cpu_one():
    from defectflow.models.backends.base import nearest_sq_distances
    from defectflow.models.backends.coreset import greedy_coreset

    x = np.random.default_rng(1).standard_normal((20000, 152), np.float32)
    device.use("cpu")
    cpu = greedy_coreset(x, 500, 128, seed=0)
    device.use("cuda")
    try:
        gpu = greedy_coreset(x, 500, 128, seed=0)
    finally:
        device.use("cpu")
    assert cpu[0] == gpu[0] and len(set(gpu)) == 500
    # same semantics: the covering radius (the farthest point from its centre) agrees
    r_cpu = nearest_sq_distances(x, x[cpu]).max()
    r_gpu = nearest_sq_distances(x, x[gpu]).max()
    assert abs(r_gpu - r_cpu) / r_cpu < 0.02, (r_cpu, r_gpu)
    assert len(set(cpu) & set(gpu)) / 500 > 0.9


@needs_gpu
def test_demo_on_cuda_matches_the_cpu_run(tmp_path):
    from test_workflow import copy_workflow, snakemake, write_config

    small = {
        "demo": {
            "categories": ["bracket"],
            "n_train": 12,
            "n_test_normal": 4,
            "n_test_per_defect": 2,
        },
        "threshold": {"folds": 3},
    }
    runs = {}
    for dev in ("cpu", "cuda"):
        wf = copy_workflow(tmp_path / dev)
        write_config(wf, **small, backbone={"device": dev})
        snakemake(wf)
        runs[dev] = wf
    for model in ("knn", "padim", "patchcore"):
        rel = f"results/demo/models/{model}/bracket"
        m = {d: json.loads((runs[d] / rel / "metrics.json").read_text()) for d in runs}
        assert abs(m["cuda"]["image"]["auroc"] - m["cpu"]["image"]["auroc"]) <= 0.05, model
        card = json.loads((runs["cuda"] / rel / "model_card.json").read_text())
        ic = json.loads((runs["cuda"] / rel / "infer_config.json").read_text())
        assert card["device"] == "cuda" and ic["device"] == "cuda"
    # defectflow infer on the GPU gives the CPU's labels
    ic = runs["cuda"] / "results/demo/models/patchcore/bracket/infer_config.json"
    imgs = str(runs["cuda"] / "resources/demo/bracket/test")
    out = {}
    for dev in ("cpu", "cuda"):
        p = tmp_path / f"{dev}.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "defectflow.cli",
                "infer",
                "--infer-config",
                str(ic),
                imgs,
                "--out",
                str(p),
                "--device",
                dev,
            ],
            check=True,
            capture_output=True,
        )
        out[dev] = [json.loads(x) for x in p.read_text().splitlines()]
    assert [r["pred_label"] for r in out["cuda"]] == [r["pred_label"] for r in out["cpu"]]


def test_torch_backbone_matches_the_onnx_graph(tmp_path):
    """The class the CUDA path runs, here on the CPU: same features as the exported ONNX graph."""
    from conftest import small_backbone

    from defectflow.features.onnx_runtime import OnnxBackbone
    from defectflow.features.torch_runtime import TorchBackbone

    card = small_backbone(tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    p_onnx, i_onnx = OnnxBackbone(tmp_path / "b.onnx")(x)
    p_torch, i_torch = TorchBackbone(card.spec, card.weights_sha256, device="cpu")(x)
    assert p_torch.shape == p_onnx.shape and i_torch.shape == i_onnx.shape
    np.testing.assert_allclose(p_torch, p_onnx, rtol=1e-2, atol=1e-2 * float(np.abs(p_onnx).max()))
    np.testing.assert_allclose(i_torch, i_onnx, rtol=1e-2, atol=1e-2 * float(np.abs(i_onnx).max()))
    with pytest.raises(ModelError, match="not the ones"):
        TorchBackbone(card.spec, "0" * 64, device="cpu")
