import hashlib

import numpy as np
from PIL import Image

from defectflow.config import DemoConfig, PreflightConfig
from defectflow.data.demo import DEFECTS, generate_demo
from defectflow.data.preflight import preflight_records
from defectflow.data.sources.mvtec import read_layout


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_is_byte_identical_across_runs(tmp_path):
    cfg = DemoConfig(n_train=5, n_test_normal=2, n_test_per_defect=2, image_size=64)
    generate_demo(tmp_path / "a", cfg)
    generate_demo(tmp_path / "b", cfg)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate_demo(tmp_path / "c", cfg.model_copy(update={"seed": 1}))
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_demo_layout_counts_and_masks(tmp_path):
    counts = generate_demo(tmp_path, DemoConfig())
    assert counts == {"tile": 60 + 16 + 18, "bracket": 60 + 16 + 18}
    for cat, defects in DEFECTS.items():
        assert len(defects) >= 3
        for d in defects:
            masks = sorted((tmp_path / cat / "ground_truth" / d).glob("*_mask.png"))
            assert len(masks) == 6
            for m in masks:
                frac = (np.asarray(Image.open(m)) > 0).mean()
                assert 0.001 < frac < 0.2, (m, frac)  # small, subtle defects
    assert Image.open(tmp_path / "tile" / "train" / "good" / "000.png").mode == "RGB"
    assert Image.open(tmp_path / "bracket" / "train" / "good" / "000.png").mode == "L"


def test_demo_passes_preflight_without_warnings(tmp_path):
    generate_demo(tmp_path, DemoConfig(n_train=12, n_test_normal=3, n_test_per_defect=2))
    from defectflow.data.sources.mvtec import DemoSource

    recs = read_layout(DemoSource(type="demo"), path=tmp_path, kind="demo")
    report, _ = preflight_records(recs, PreflightConfig(threads=1), "demo", "m")
    assert report.ok and report.counts["warning"] == 0, [
        i.message for i in report.issues if i.severity != "info"
    ]


def test_defects_are_subtle(tmp_path):
    """A weak detector (mean absolute deviation from the mean normal image) must not be perfect."""
    from sklearn.metrics import roc_auc_score

    generate_demo(tmp_path, DemoConfig())
    for cat in DEFECTS:
        load = lambda p: np.asarray(Image.open(p).convert("L"), dtype=np.float64) / 255  # noqa: E731
        train = np.stack(
            [load(p) for p in sorted((tmp_path / cat / "train" / "good").glob("*.png"))]
        )
        mean = train.mean(0)
        scores, labels = [], []
        for p in sorted((tmp_path / cat / "test").rglob("*.png")):
            scores.append(np.abs(load(p) - mean).mean())
            labels.append(int(p.parent.name != "good"))
        assert roc_auc_score(labels, scores) < 0.95, cat
