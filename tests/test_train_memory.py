"""A train job's declared `mem_mb` holds what the job really uses (a scheduler kills a job that
passes it), and grows with the features it loads."""

from __future__ import annotations

import json

import pytest

from defectflow.models.memory import measure_train, synthetic_train_data, train_mem_mb


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
    table, files = synthetic_train_data(tmp_path / "d", 900, 400, patch_shape=(64, 28, 28), dim=96)
    declared = train_mem_mb(params, files, fallback=-1)
    assert declared > 0
    peak_mb = measure_train(table, files, params, tmp_path / "out")
    print(params["backend"], f"peak {peak_mb:.0f} MB, declared {declared} MB")
    assert peak_mb < declared, (peak_mb, declared)
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["n_train"] == 810 and card["crossfit"]["val_normals"] == 90


def test_declared_train_memory_grows_with_the_features(tmp_path):
    small = synthetic_train_data(tmp_path / "a", 100, 400, patch_shape=(64, 28, 28), dim=96)[1]
    big = synthetic_train_data(tmp_path / "b", 1200, 400, patch_shape=(64, 28, 28), dim=96)[1]
    for params in ({"backend": "padim"}, {"backend": "patchcore"}):
        assert train_mem_mb(params, big, fallback=-1) > train_mem_mb(params, small, fallback=-1)
    # before the features exist (a dry run ahead of embedding): the rule's fallback
    assert train_mem_mb({"backend": "padim"}, [str(tmp_path / "none.safetensors")], 8000) == 8000
    assert train_mem_mb({"backend": "anomalib", "model": "Padim"}, [], 8000) == 8000
