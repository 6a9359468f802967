"""Backbone weights, backends, checkpoints, calibration and metrics on constructed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from defectflow.backbone import BackboneSpec, build_extractor, builtin_weights_path, remap_in_order
from defectflow.backends import EMBEDDING_BACKENDS
from defectflow.backends.padim import spd_inverse
from defectflow.backends.patchcore import greedy_coreset
from defectflow.config import ThresholdConfig
from defectflow.detector import PredictionRecord, regions
from defectflow.errors import ModelError
from defectflow.metrics import image_metrics, per_defect, pixel_metrics
from defectflow.models import load_checkpoint, save_checkpoint
from defectflow.thresholds import calibrate, normalize


def test_builtin_weights_map_in_order_onto_timm_lite0():
    import timm

    sd = torch.load(builtin_weights_path(), map_location="cpu", weights_only=True)
    net = timm.create_model("tf_efficientnet_lite0")
    own = net.state_dict()
    mapped = remap_in_order(sd, list(own), {k: v.shape for k, v in own.items()})
    assert list(mapped) == list(own) and all(mapped[k].shape == own[k].shape for k in own)
    with pytest.raises(ModelError, match="does not fit"):
        remap_in_order(
            dict(reversed(list(sd.items()))), list(own), {k: v.shape for k, v in own.items()}
        )


def test_builtin_weights_predict_real_photos():
    """Sanity prediction on the two photos scikit-learn ships: the mapped ImageNet weights must
    see a daisy in flower.jpg and a building in china.jpg (a wrong mapping sees noise)."""
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from defectflow.preprocess import PreprocessSpec, to_tensor

    net = timm.create_model("tf_efficientnet_lite0").eval()
    sd = torch.load(builtin_weights_path(), map_location="cpu", weights_only=True)
    own = net.state_dict()
    net.load_state_dict(remap_in_order(sd, list(own), {k: v.shape for k, v in own.items()}))
    spec = PreprocessSpec()  # mean = std = 0.5, as the package's weights expect
    with torch.no_grad():
        flower = net(to_tensor(Image.fromarray(load_sample_image("flower.jpg")), spec)[None])[0]
        china = net(to_tensor(Image.fromarray(load_sample_image("china.jpg")), spec)[None])[0]
    assert int(flower.argmax()) == 985  # daisy
    assert {442, 483, 698} & set(china.topk(5).indices.tolist())  # bell cote, castle, palace


def test_extractor_shapes_and_weights_hash():
    model, sha = build_extractor(BackboneSpec())
    assert sha and len(sha) == 64
    patch, image = model(torch.zeros(2, 3, 224, 224))
    assert patch.shape == (2, 152, 28, 28) and image.shape == (2, model.image_dim)


def test_tampered_weights_are_refused(tmp_path):
    from defectflow.errors import IntegrityError

    with pytest.raises(IntegrityError):
        build_extractor(BackboneSpec(), expected_sha256="0" * 64)


def test_spd_inverse_is_a_true_inverse_with_threads():
    """torch 2.14's batched linalg.inv/solve are wrong here with >1 thread; ours must not be."""
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(784, 40, 152, generator=g)
    xc = x - x.mean(1, keepdim=True)
    cov = torch.einsum("pnc,pnd->pcd", xc, xc) / 39 + 0.01 * torch.eye(152)
    inv = spd_inverse(cov)
    err = (cov.double() @ inv.double() - torch.eye(152, dtype=torch.float64)).abs().max()
    assert err < 1e-3, float(err)


def test_greedy_coreset_covers_better_than_random():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat(
        [torch.randn(2000, 16, generator=g) * 0.1, torch.randn(20, 16, generator=g) * 5]
    )
    idx = greedy_coreset(pts, 40, projection_dim=0, seed=0)
    assert len(set(idx.tolist())) == 40
    assert (idx >= 2000).sum() >= 15  # the outliers are what a coverage-maximising pick takes

    def radius(sel):
        return torch.cdist(pts, pts[sel]).min(1).values.max()

    rand = torch.randperm(len(pts), generator=g)[:40]
    assert radius(idx) < radius(rand)


def _synthetic(n_train=30, n_test=20, c=24, h=8, w=8, seed=0):
    """Patch features of normal images; anomalies have a shifted 2x2 patch block."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(c, h, w, generator=g)
    train = base + 0.3 * torch.randn(n_train, c, h, w, generator=g)
    test = base + 0.3 * torch.randn(n_test, c, h, w, generator=g)
    labels = np.array([0] * (n_test // 2) + [1] * (n_test - n_test // 2))
    for i in np.nonzero(labels)[0]:
        test[i, :, 3:5, 4:6] += 2.0 * torch.randn(c, 1, 1, generator=g)
    return train, test, labels


@pytest.mark.parametrize("name", sorted(EMBEDDING_BACKENDS))
def test_backend_finds_defects_and_round_trips(name, tmp_path):
    train, test, labels = _synthetic()
    params = {"coreset_ratio": 0.5, "k": 1} if name != "padim" else {}
    b = EMBEDDING_BACKENDS[name](params)
    b.fit(train, train.mean((2, 3)), seed=0)
    scores, maps = b.score(test, test.mean((2, 3)) if name != "knn" else test.flatten(2).mean(2))
    if (
        name == "knn"
    ):  # image embedding: pooled features miss a small local defect less easily when concatenated
        b2 = EMBEDDING_BACKENDS[name](params)
        b2.fit(None, train.flatten(1), seed=0)
        scores, maps = b2.score(None, test.flatten(1))
        b = b2
    assert roc_auc_score(labels, scores.numpy()) > 0.9
    if maps is not None:
        peak = maps[labels == 1].flatten(1).argmax(1)
        rows, cols = peak // maps.shape[-1], peak % maps.shape[-1]
        assert ((rows >= 2) & (rows <= 5) & (cols >= 3) & (cols <= 6)).float().mean() > 0.8
    save_checkpoint(b, tmp_path / "c.safetensors", {"backend": name, "params": params})
    again = load_checkpoint(tmp_path / "c.safetensors")
    img = test.flatten(1) if name == "knn" else test.mean((2, 3))
    s2, _ = again.score(test if again.uses_patches else None, img)
    assert torch.equal(s2, b.score(test if b.uses_patches else None, img)[0])


def test_calibration_policies():
    normal = np.linspace(0, 1, 101)
    t = calibrate(
        normal,
        ["normal"] * 101,
        [str(i) for i in range(101)],
        ThresholdConfig(policy="auto", quantile=0.9),
    )
    assert t.policy == "normal_quantile" and t.value == pytest.approx(0.9)
    assert normalize([t.value], t)[0] == pytest.approx(0.5) and normalize([t.low], t)[0] == 0.0
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    t = calibrate(scores, ["normal"] * 3 + ["anomaly"] * 2, list("abcde"), ThresholdConfig())
    assert t.policy == "f1_optimal" and t.value == pytest.approx(0.8) and t.f1 == pytest.approx(1.0)
    assert (t.n_normal, t.n_anomaly) == (3, 2)
    t2 = calibrate(scores, ["normal"] * 3 + ["anomaly"] * 2, list("edcba"), ThresholdConfig())
    assert t2.calibration_ids_sha256 == t.calibration_ids_sha256  # order-independent fingerprint
    t = calibrate(scores, [None] * 5, list("abcde"), ThresholdConfig(policy="fixed", value=0.5))
    assert t.value == 0.5
    with pytest.raises(ModelError, match="f1_optimal needs"):
        calibrate(scores, ["normal"] * 5, list("abcde"), ThresholdConfig(policy="f1_optimal"))
    with pytest.raises(ModelError, match="needs `threshold.value`"):
        calibrate(scores, ["normal"] * 5, list("abcde"), ThresholdConfig(policy="fixed"))


def _rec(i, gt, score, dt=None):
    return PredictionRecord(image_id=f"i{i}", image_path=f"{i}.png", score=score, normalized_score=score, pred_label="anomaly" if score >= 0.5 else "normal",
                            gt_label=gt, defect_type=dt, model_id="m")  # fmt: skip


def test_image_metrics_on_known_scores():
    recs = [
        _rec(0, "normal", 0.1),
        _rec(1, "normal", 0.6),
        _rec(2, "anomaly", 0.7, "dent"),
        _rec(3, "anomaly", 0.4, "scratch"),
    ]
    m = image_metrics(recs)
    assert m.auroc == pytest.approx(0.75) and m.confusion == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert m.f1 == pytest.approx(0.5) and m.precision == pytest.approx(0.5)
    d = per_defect(recs)
    assert (
        d["dent"]["auroc"] == 1.0 and d["scratch"]["auroc"] == 0.5 and d["scratch"]["recall"] == 0.0
    )
    only_normal = image_metrics([_rec(0, "normal", 0.1)])
    assert only_normal.status == "skipped" and only_normal.auroc is None


def test_pixel_metrics_gated_on_masks(tmp_path):
    from PIL import Image

    recs = [_rec(0, "normal", 0.1), _rec(1, "anomaly", 0.9)]
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    perfect = {"i0": np.zeros((32, 32), np.float32), "i1": (mask > 0).astype(np.float32)}
    ok = pixel_metrics(recs, {"i1": str(tmp_path / "m.png")}, perfect)
    assert ok.status == "ok" and ok.auroc == 1.0 and ok.aupro == pytest.approx(1.0, abs=1e-3)
    skipped = pixel_metrics(recs, {"i1": None}, perfect)
    assert (
        skipped.status == "skipped"
        and "1 of 1 anomalous test images have no mask" in skipped.reason
    )
    assert pixel_metrics(recs, {"i1": str(tmp_path / "m.png")}, {}).status == "skipped"


def test_regions_are_boxes_in_image_pixels():
    m = np.zeros((28, 28), np.float32)
    m[7:14, 14:21] = 0.9
    (r,) = regions(m, (280, 140))
    assert (r.x0, r.y0, r.x1, r.y1) == (140, 35, 210, 70) and r.score == pytest.approx(0.9)
    assert regions(np.zeros((28, 28)), (10, 10)) == []
