"""The anomalib backend: train a fast anomalib model by name on tiny data, deliver it without
pickle, and score through the same Detector as the embedding backends."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sklearn.metrics import roc_auc_score

from defectflow.artifacts.standardized import StandardizedRow
from defectflow.config import DemoConfig, DemoSource, PreflightConfig, SplitConfig
from defectflow.demo import generate_demo
from defectflow.detector import Detector
from defectflow.errors import ModelError
from defectflow.ingest import ingest_mvtec
from defectflow.preflight import preflight_records
from defectflow.standardize import standardize_records
from defectflow.tables import write_table


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomalib")
    generate_demo(
        root / "demo", DemoConfig(n_train=14, n_test_normal=4, n_test_per_defect=2, image_size=64)
    )
    recs = [
        r
        for r in ingest_mvtec(DemoSource(type="demo"), path=root / "demo", kind="demo")
        if r.category == "bracket"
    ]
    _, facts = preflight_records(recs, PreflightConfig(threads=1), "d", "m")
    rows = standardize_records(recs, facts, SplitConfig(val_fraction=0.2))
    write_table(root / "standardized.parquet", rows, StandardizedRow, "standardized_row")
    return root


def test_anomalib_padim_trains_delivers_and_scores(table):
    from defectflow.models import read_infer_config, run_calibrate, run_train_rule

    out = table / "models" / "apadim" / "bracket"
    out.mkdir(parents=True)
    cfg = {
        "backend": "anomalib",
        "model": "Padim",
        "init": {"backbone": "tf_efficientnet_lite0", "layers": [2, 3], "n_features": 64},
    }
    inputs = SimpleNamespace(table=str(table / "standardized.parquet"))
    card = run_train_rule(
        inputs,
        "d",
        "bracket",
        "apadim",
        cfg,
        96,
        out / "checkpoint.safetensors",
        out / "model_card.json",
    )
    assert card.backend == "anomalib" and card.n_train > 0
    ic = run_calibrate(out / "checkpoint.safetensors", [], [], table / "standardized.parquet", "d", "bracket", "apadim",
                       {"image_size": 96}, {}, out / "infer_config.json")  # fmt: skip
    assert (
        ic.backend == "anomalib"
        and ic.threshold.policy == "normal_quantile"
        and ic.weights.source == "builtin"
    )
    assert read_infer_config(out / "infer_config.json").checkpoint.path == "checkpoint.safetensors"

    from defectflow.standardize import read_standardized

    test = [r for r in read_standardized(table / "standardized.parquet") if r["split"] == "test"]
    det = Detector.load(out / "infer_config.json")
    recs, maps = det.predict(
        [
            {"image_path": r["image_path"], "image_id": r["image_id"], "gt_label": r["label"]}
            for r in test
        ]
    )
    assert all(r.error is None for r in recs) and len(maps) == len(recs)
    y = [r.gt_label == "anomaly" for r in recs]
    assert roc_auc_score(y, [r.score for r in recs]) > 0.7
    assert next(iter(maps.values())).shape == (96, 96)


def test_unknown_anomalib_model_is_a_clear_error():
    from defectflow.backends.anomalib_backend import build_module

    with pytest.raises(ModelError, match="no model 'Padimm'.*Padim"):
        build_module("Padimm", {}, 64, [0.5] * 3, [0.5] * 3)
    with pytest.raises(ModelError, match="cannot build"):
        build_module(
            "Padim",
            {"backbone": "tf_efficientnet_lite0", "layers": [2, 3]},
            64,
            [0.5] * 3,
            [0.5] * 3,
        )
