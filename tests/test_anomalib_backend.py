"""The anomalib backend: anomalib models by name on tiny data, through the same registry path as
every backend (train with cross-fit, score, calibrate, deliver, `defectflow infer`)."""

from __future__ import annotations

import pytest
from sklearn.metrics import roc_auc_score

from defectflow.artifacts.infer_config import read_infer_config
from defectflow.artifacts.standardized import StandardizedRow, category_rows
from defectflow.config import DemoConfig, PreflightConfig, SplitConfig, parse_config
from defectflow.data.demo import generate_demo
from defectflow.data.preflight import preflight_records
from defectflow.data.sources.mvtec import DemoSource, read_layout
from defectflow.data.standardize import standardize_records
from defectflow.deploy.detector import Detector
from defectflow.deploy.scoring import run_score
from defectflow.errors import ConfigError, ModelError
from defectflow.models.calibrate import run_calibrate
from defectflow.models.train import run_train
from defectflow.tables import write_table

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomalib")
    generate_demo(
        root / "demo", DemoConfig(n_train=20, n_test_normal=4, n_test_per_defect=2, image_size=96)
    )
    recs = [
        r
        for r in read_layout(DemoSource(type="demo"), path=root / "demo", kind="demo")
        if r.category == "bracket"
    ]
    _, facts = preflight_records(recs, PreflightConfig(threads=1), "d", "m")
    rows = standardize_records(recs, facts, SplitConfig())
    write_table(root / "standardized.parquet", rows, StandardizedRow, "standardized_row")
    return root


@pytest.mark.parametrize(
    ("model", "init", "epochs"),
    [
        ("Padim", {"backbone": LITE0, "layers": [2, 3], "n_features": 12}, 1),
        ("Dfm", {"backbone": LITE0, "layer": 3}, 1),
        (
            "Stfpm",
            {"backbone": LITE0, "layers": [1, 2]},
            2,
        ),  # a teacher with packaged weights, a random student
    ],
)
def test_anomalib_model_goes_through_the_registry_path(table, model, init, epochs):
    out = table / "models" / model / "bracket"
    out.mkdir(parents=True)
    params = {
        "backend": "anomalib",
        "model": model,
        "init": init,
        "max_epochs": epochs,
        "batch_size": 4,
    }
    tbl = table / "standardized.parquet"
    card = run_train(
        tbl,
        [],
        "d",
        category="bracket",
        model=model,
        params=params,
        folds=3,
        out_ckpt=out / "checkpoint.safetensors",
        out_card=out / "model_card.json",
        out_crossfit=out / "crossfit.parquet",
        image_size=96,
    )
    assert card.backend == "anomalib" and card.n_train == 20 and card.crossfit["folds"] == 3
    run_score(
        out / "checkpoint.safetensors",
        tbl,
        None,
        category="bracket",
        shard=0,
        n_shards=1,
        out_size=96,
        sigma=4.0,
        out_scores=out / "scores.parquet",
        out_maps=out / "maps.safetensors",
    )
    ic = run_calibrate(
        out / "crossfit.parquet",
        out / "checkpoint.safetensors",
        None,
        backbone_card=None,
        dataset="d",
        category="bracket",
        model=model,
        threshold={},
        map_sigma=4.0,
        out=out / "infer_config.json",
    )
    # val (carved from test: 1 normal, 1 image of each of the 3 defect types) is held out; with
    # fewer than 3 val normals the 20 out-of-fold training normals join it
    t = ic.threshold
    assert ic.consumes == "images" and (t.n_normal, t.n_anomaly, t.folds) == (21, 3, 3)
    assert (t.policy, t.calibration) == ("f1_optimal", "crossfit+val")
    assert read_infer_config(out / "infer_config.json").checkpoint.path == "checkpoint.safetensors"

    test = category_rows(tbl, "bracket", ("test",))
    recs, maps = Detector.load(out / "infer_config.json").predict(
        [
            {"image_path": r["image_path"], "image_id": r["image_id"], "gt_label": r["label"]}
            for r in test
        ]
    )
    assert all(r.error is None for r in recs) and len(maps) == len(recs)
    assert next(iter(maps.values())).shape == (96, 96)
    auroc = roc_auc_score([r.gt_label == "anomaly" for r in recs], [r.score for r in recs])
    assert auroc > 0.6, auroc  # tiny data, few epochs: clearly better than chance, no more


def test_anomalib_names_and_arguments_are_checked_early():
    with pytest.raises(ConfigError, match="no image model 'padim'; did you mean 'Padim'"):
        parse_config(
            {
                "datasets": {"d": {"sources": [{"type": "demo"}]}},
                "models": {"m": {"backend": "anomalib", "model": "padim"}},
            }
        )
    with pytest.raises(ConfigError, match="no image model 'DictConfig'"):
        parse_config(
            {
                "datasets": {"d": {"sources": [{"type": "demo"}]}},
                "models": {"m": {"backend": "anomalib", "model": "DictConfig"}},
            }
        )
    from defectflow.models.backends.anomalib import build_module

    with pytest.raises(ModelError, match=r"takes no argument \['pre_trained'\]"):
        build_module("Stfpm", {"backbone": LITE0, "pre_trained": True}, 64, [0.5] * 3, [0.5] * 3)


def test_a_typo_in_init_stops_the_config_check_not_training():
    """`init` keys are checked against the model's constructor, read from anomalib's source
    (no import): a typo is answered with a did-you-mean before any job runs."""
    from defectflow.config import parse_config
    from defectflow.errors import ConfigError

    data = {"datasets": {"d": {"sources": [{"type": "demo"}]}}}
    good = {"backend": "anomalib", "model": "Stfpm", "init": {"backbone": "resnet18"}}
    assert parse_config(data | {"models": {"s": good}}).models["s"].init == {"backbone": "resnet18"}
    bad = {**good, "init": {"backbon": "resnet18"}}
    with pytest.raises(
        ConfigError, match=r"takes no argument \['backbon'\]; did you mean 'backbone'"
    ):
        parse_config(data | {"models": {"s": bad}})
