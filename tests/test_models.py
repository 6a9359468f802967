"""Backbone weights, the backend registry, backends, coreset, nearest neighbours, cross-fit
calibration, metrics and the sealed infer_config, on constructed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from defectflow.artifacts.checkpoint import load_checkpoint, save_checkpoint
from defectflow.artifacts.infer_config import normalize
from defectflow.artifacts.predictions import PredictionRecord
from defectflow.config import ThresholdConfig
from defectflow.deploy.maps import regions
from defectflow.errors import ModelError
from defectflow.evaluation.metrics import aupro, best_f1, image_metrics, per_defect, pixel_metrics
from defectflow.features.backbone import (
    BUILTIN_ARCHS,
    BackboneSpec,
    build_extractor,
    builtin_weights_path,
    remap_in_order,
)
from defectflow.models import backends
from defectflow.models.backends.base import Features, nearest_sq_distances
from defectflow.models.backends.coreset import greedy_coreset
from defectflow.models.backends.padim import spd_inverse
from defectflow.models.thresholds import calibrate
from defectflow.models.train import assign_folds


@pytest.mark.parametrize("name", BUILTIN_ARCHS)
def test_builtin_weights_map_in_order_onto_timm(name):
    import timm

    sd = torch.load(builtin_weights_path(name), map_location="cpu", weights_only=True)
    net = timm.create_model(name)
    own = net.state_dict()
    mapped = remap_in_order(sd, list(own), {k: v.shape for k, v in own.items()})
    assert list(mapped) == list(own) and all(mapped[k].shape == own[k].shape for k in own)
    with pytest.raises(ModelError, match="does not fit"):
        remap_in_order(
            dict(reversed(list(sd.items()))), list(own), {k: v.shape for k, v in own.items()}
        )


@pytest.mark.parametrize("name", BUILTIN_ARCHS)
def test_builtin_weights_predict_real_photos(name):
    """Sanity prediction on the two photos scikit-learn ships: the mapped ImageNet weights must
    see a daisy in flower.jpg and a building in china.jpg (a wrong mapping sees noise: with
    random weights the daisy ranks 345th-918th). lite0 and lite1 rank the daisy first; lite2 at
    224 px calls the close-up a honeycomb and ranks the daisy 10th."""
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from defectflow.features.preprocess import PreprocessSpec, to_array

    net = timm.create_model(name).eval()
    sd = torch.load(builtin_weights_path(name), map_location="cpu", weights_only=True)
    own = net.state_dict()
    net.load_state_dict(remap_in_order(sd, list(own), {k: v.shape for k, v in own.items()}))
    spec = PreprocessSpec()  # mean = std = 0.5, as the package's weights expect

    def top(photo: str) -> torch.Tensor:
        x = torch.from_numpy(to_array(Image.fromarray(load_sample_image(photo)), spec))[None]
        with torch.no_grad():
            return net(x)[0]

    assert 985 in top("flower.jpg").topk(10).indices.tolist()  # daisy
    assert {442, 483, 698} & set(top("china.jpg").topk(5).indices.tolist())


def test_extractor_shapes_and_weights_hash():
    model, sha = build_extractor(BackboneSpec())
    assert sha and len(sha) == 64
    patch, image = model(torch.zeros(2, 3, 224, 224))
    assert patch.shape == (2, 152, 28, 28) and image.shape == (2, model.image_dim)


def test_onnx_backbone_matches_torch(tmp_path):
    from conftest import small_backbone

    from defectflow.artifacts.backbone import read_backbone_card
    from defectflow.features.onnx_runtime import OnnxBackbone

    card = small_backbone(tmp_path)
    assert read_backbone_card(tmp_path / "b.json") == card and card.patch_shape == [152, 12, 12]
    model, _ = build_extractor(BackboneSpec(layers=[2, 3], pool=3))
    x = np.random.default_rng(1).standard_normal((3, 3, 96, 96)).astype(np.float32)
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(x))
    got, _ = OnnxBackbone(tmp_path / "b.onnx")(x)  # another batch size than at export
    assert np.abs(got - ref.numpy()).max() < 2e-2 * np.abs(ref.numpy()).max()


def test_tampered_weights_are_refused(tmp_path):
    from defectflow.errors import IntegrityError

    with pytest.raises(IntegrityError):
        build_extractor(BackboneSpec(), expected_sha256="0" * 64)


def test_every_registry_entry_is_a_working_backend():
    """Each entry's typed params take its name as `backend`, have defaults for everything else
    (a config names the backend and nothing more), and its implementation carries that name."""
    from defectflow.config import parse_config

    for name, e in backends.REGISTRY.items():
        assert e.params.model_fields["backend"].annotation.__args__[0] == name
        assert e.consumes in ("features", "images")
        if name == "anomalib":
            continue  # its `model` is required; tested in test_anomalib_backend
        models = {"m": {"backend": name}} | ({"k": {"backend": "knn"}} if e.members else {})
        cfg = parse_config({"datasets": {"d": {"sources": [{"type": "demo"}]}}, "models": models})
        assert isinstance(cfg.models["m"], e.params) and e.load().name == name


def test_spd_inverse_is_a_true_inverse_with_threads():
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((784, 40, 152))
    xc = x - x.mean(1, keepdims=True)
    cov = np.einsum("pnc,pnd->pcd", xc, xc) / 39 + 0.01 * np.eye(152)
    with threadpool_limits(2):
        inv = spd_inverse(cov)
    assert np.abs(cov @ inv - np.eye(152)).max() < 1e-6


def _reference_kcenter(x: np.ndarray, n: int, first: int) -> list[int]:
    """The textbook loop: distance to every point, every iteration."""
    mind = np.full(len(x), np.inf)
    out, idx = [], first
    for _ in range(n):
        out.append(idx)
        mind = np.minimum(mind, ((x - x[idx]) ** 2).sum(1))
        idx = int(np.argmax(mind))
    return out


def test_coreset_selects_what_the_textbook_loop_selects():
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [rng.standard_normal((3000, 8)) * 0.2, rng.standard_normal((30, 8)) * 5]
    ).astype(np.float32)
    got = greedy_coreset(x, 200, projection_dim=0, seed=0)
    first = int(np.random.default_rng(0).integers(len(x)))
    assert got.tolist() == _reference_kcenter(x.astype(np.float64), 200, first)
    assert (got >= 3000).sum() == 30  # every outlier is taken: it is what k-center covers first


def test_nearest_neighbours_are_exact_across_blocks():
    from defectflow.models.backends.base import nearest_index

    rng = np.random.default_rng(0)
    bank = rng.standard_normal((9000, 24)).astype(np.float32)
    q = rng.standard_normal((1500, 24)).astype(np.float32)
    d2 = nearest_sq_distances(q, bank, qblock=512, bblock=1000)
    full = ((q[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    assert np.allclose(d2, full.min(1), rtol=1e-4, atol=1e-4)
    assert (nearest_index(q[:50], bank) == full[:50].argmin(1)).all()


def _synthetic(n_train=30, n_test=20, c=24, h=8, w=8, seed=0):
    """Patch features of normal images; anomalies have a shifted 2x2 patch block."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((c, h, w))
    train = base + 0.3 * rng.standard_normal((n_train, c, h, w))
    test = base + 0.3 * rng.standard_normal((n_test, c, h, w))
    labels = np.array([0] * (n_test // 2) + [1] * (n_test - n_test // 2))
    for i in np.nonzero(labels)[0]:
        test[i, :, 3:5, 4:6] += 2.0 * rng.standard_normal((c, 1, 1))

    def feats(p):
        p = p.astype(np.float32)
        return Features([f"i{k}" for k in range(len(p))], p, p.reshape(len(p), -1))

    return feats(train), feats(test), labels


@pytest.mark.parametrize("name", ["knn", "padim", "patchcore"])
def test_backend_finds_defects_and_round_trips(name, tmp_path):
    train, test, labels = _synthetic()
    params = {"backend": name} | ({"coreset_ratio": 0.5} if name == "patchcore" else {})
    b = backends.build(params)
    b.fit(train, seed=0)
    scores, maps = b.score(test)
    assert roc_auc_score(labels, scores) > 0.9
    assert (maps is not None) == backends.entry(name).maps
    if maps is not None:
        peak = maps[labels == 1].reshape(int(labels.sum()), -1).argmax(1)
        rows, cols = peak // maps.shape[-1], peak % maps.shape[-1]
        assert ((rows >= 2) & (rows <= 5) & (cols >= 3) & (cols <= 6)).mean() > 0.8
    save_checkpoint(b, tmp_path / "c.safetensors")
    again = load_checkpoint(tmp_path / "c.safetensors")
    assert type(again) is type(b) and again.params == b.params
    assert np.array_equal(again.score(test)[0], scores)


def test_patchcore_fold_model_drops_the_held_out_images_entries(tmp_path):
    train, _, _ = _synthetic()
    b = backends.build({"backend": "patchcore", "coreset_ratio": 0.5})
    b.fit(train)
    keep = np.arange(20)
    fold = b.fold_model(keep, train)
    assert set(fold.source.tolist()) <= set(keep.tolist()) and 0 < len(fold.bank) < len(b.bank)
    held = train.subset(np.arange(20, 30))
    assert (
        fold.score(held)[0] > b.score(held)[0]
    ).all()  # out of sample scores above in-sample ones
    assert backends.build({"backend": "knn"}).fold_model(keep, train) is None  # knn refits
    save_checkpoint(b, tmp_path / "c.safetensors")
    assert np.array_equal(load_checkpoint(tmp_path / "c.safetensors").source, b.source)


def test_padim_fold_model_is_the_refit_on_the_kept_images():
    """PaDiM's fold model takes the held-out images' sums off the delivered model's: the same
    Gaussians as a refit on the kept images (to float64 rounding), with no refit and no copy."""
    train, test, _ = _synthetic(n_train=70)  # more than one chunk of 32
    params = {"backend": "padim", "n_features": 6}
    full = backends.build(params)
    full.fit(train, seed=3)
    keep = np.arange(7, 60)
    fold = full.fold_model(keep, train)
    refit = backends.build(params)
    refit.fit(train.subset(keep), seed=3)
    assert np.array_equal(fold.channels, refit.channels)
    np.testing.assert_allclose(fold.mean, refit.mean, rtol=1e-5, atol=1e-6)
    # a fold model keeps the Cholesky factor L of each covariance (L L^T, stored as L^T), not
    # its inverse
    lt = fold._chol.astype(np.float64)
    assert np.array_equal(lt, np.triu(lt))
    cov = lt.transpose(0, 2, 1) @ lt
    np.testing.assert_allclose(
        cov @ refit.inv_cov, np.broadcast_to(np.eye(6), cov.shape), atol=1e-4
    )
    np.testing.assert_allclose(fold.score(test)[0], refit.score(test)[0], rtol=1e-4)
    assert not np.allclose(fold.mean, full.mean)  # the held-out images really left
    # a streamed fit in chunks equals the two-pass textbook estimate
    x = train.patch[:, full.channels].astype(np.float64)
    n, c, h, w = x.shape
    x = x.reshape(n, c, h * w).transpose(2, 0, 1)
    xc = x - x.mean(1, keepdims=True)
    cov = np.matmul(xc.transpose(0, 2, 1), xc) / (n - 1) + 0.01 * np.eye(c)
    np.testing.assert_allclose(full.mean, x.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.inv_cov, np.linalg.inv(cov), rtol=1e-4, atol=1e-5)


def _refit_without(params, train, fold, f, seed=0):
    """Scores of fold ``f``'s images by a model fitted afresh on every other image."""
    keep, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
    b = backends.build(params)
    b.fit(train.subset(keep), seed=seed)
    return b.score(train.subset(held))[0]


@pytest.mark.parametrize("groups", [False, True])
def test_knn_leave_one_out_equals_a_refit_without_the_image(groups):
    train, _, _ = _synthetic(n_train=24)
    gid = [f"part{i // 3}" if groups else None for i in range(24)]
    fold = assign_folds(train.ids, gid, 8 if groups else 24, seed=0)
    params = {"backend": "knn", "k": 2}
    b = backends.build(params)
    b.fit(train)
    loo = b.loo_scores(train, fold)
    for f in np.unique(fold):
        np.testing.assert_allclose(
            loo[fold == f], _refit_without(params, train, fold, f), rtol=1e-6
        )
    # in-sample scores are the image's distance to itself: leave-one-out is what a new part sees
    assert (loo > b.score(train)[0] + 1e-3).all()


def test_padim_leave_one_out_equals_a_refit_without_the_image():
    """The closed form (Sherman-Morrison on each position's covariance) against refits, with
    fewer images than channels, where 1 - c q nears 0 and float32 would lose it."""
    train, _, _ = _synthetic(n_train=12, c=16)
    params = {"backend": "padim"}
    b = backends.build(params)
    b.fit(train)
    fold = np.arange(12)
    loo = b.loo_scores(train, fold)
    ref = np.array([_refit_without(params, train, fold, f)[0] for f in range(12)])
    np.testing.assert_allclose(loo, ref, rtol=1e-4)
    assert b.loo_scores(train, fold // 2) is None  # groups of two: one fold model per group


def test_patchcore_leave_one_out_drops_only_the_images_own_entries():
    """Each image against the delivered bank less its own entries: the fold model of every
    other image, scored in one pass over a masked copy."""
    train, _, _ = _synthetic(n_train=16)
    b = backends.build({"backend": "patchcore", "coreset_ratio": 0.5})
    b.fit(train)
    fold = np.arange(16) // 2  # pairs, as group_id would make them
    loo = b.loo_scores(train, fold)
    for f in range(8):
        keep = np.flatnonzero(fold != f)
        ref = b.fold_model(keep, train).score(train.subset(np.flatnonzero(fold == f)))[0]
        np.testing.assert_allclose(loo[fold == f], ref, rtol=1e-5)
    assert (loo > b.score(train)[0]).all()


def test_cross_fit_leaves_one_out_up_to_the_limit_then_folds():
    from defectflow.models.train import cross_fit

    train, _, _ = _synthetic(n_train=20)
    b = backends.build({"backend": "knn"})
    b.fit(train)
    kw = {"folds": 5, "seed": 0, "label": "t"}
    loo, fold, k, how, _ = cross_fit(b, train, [None] * 20, leave_one_out=20, **kw)
    assert k == 20 and len(set(fold.tolist())) == 20 and how.startswith("leave-one-out")
    five, fold5, k5, how5, _ = cross_fit(b, train, [None] * 20, leave_one_out=19, **kw)
    assert k5 == 5 and not how5.startswith("leave-one-out")
    # a nearest neighbour among 4/5 of the images is never nearer than among all but one
    assert (five >= loo - 1e-12).all() and five.mean() > loo.mean()


def test_folds_are_balanced_and_keep_groups_together():
    ids = [f"img{i}" for i in range(40)]
    groups = [f"part{i // 4}" for i in range(40)]  # 10 parts of 4 shots
    f = assign_folds(ids, groups, 5, seed=0)
    assert sorted(np.bincount(f)) == [8] * 5
    for g in set(groups):
        assert len({f[i] for i in range(40) if groups[i] == g}) == 1
    assert np.array_equal(f, assign_folds(ids, groups, 5, seed=0))


def _rows(normal, anomaly=()):
    """Calibration rows as train writes them: out-of-fold normals (fold >= 0), and val anomalies
    scored by the delivered model (fold -1)."""
    return [
        {"image_id": f"n{i}", "label": "normal", "score": s, "fold": i % 5}
        for i, s in enumerate(normal)
    ] + [
        {"image_id": f"a{i}", "label": "anomaly", "score": s, "fold": -1}
        for i, s in enumerate(anomaly)
    ]


def test_calibration_policies():
    normal = np.linspace(0, 1, 101)
    t = calibrate(_rows(normal), ThresholdConfig(policy="normal_quantile", quantile=0.9), folds=5)
    assert t.policy == "normal_quantile" and t.value == pytest.approx(0.9)
    assert t.false_alarms.target == pytest.approx(0.1) and t.false_alarms.rank == 91
    # no val anomaly: auto holds a false-alarm rate, the conformal ceil((n+1)(1-a))-th score
    a = calibrate(_rows(normal), ThresholdConfig(fpr=0.1), folds=5)
    assert a.policy == "fpr" and a.value == pytest.approx(normal[91]) and a.quantile is None
    assert a.false_alarms.expected <= 0.1 and a.false_alarms.low < 0.1 < a.false_alarms.high
    assert t.n_normal == 101 and t.folds == 5 and t.normal_scores["max"] == 1.0
    assert t.calibration == "crossfit"
    assert normalize([t.value], t)[0] == pytest.approx(0.5) and normalize([t.low], t)[0] == 0.0
    t = calibrate(_rows([0.1, 0.2, 0.3], [0.8, 0.9, 0.95]), ThresholdConfig(), folds=5)
    # F1-optimal: midway between the lowest anomaly caught and the highest normal below it
    assert (
        t.policy == "f1_optimal" and t.value == pytest.approx(0.55) and t.f1 == pytest.approx(1.0)
    )
    assert (t.n_normal, t.n_anomaly, t.calibration) == (3, 3, "crossfit+val")
    # held-out val images (fold -1) carry the F1-optimal threshold when 3+ of them are normal; the
    # out-of-fold training normals (which run high here) are left out
    val = [{**r, "fold": -1} for r in _rows([0.2, 0.25, 0.3], [0.5, 0.6, 0.9])]
    cross = [
        {**r, "image_id": f"cf{i}", "fold": i % 5}
        for i, r in enumerate(_rows([0.1, 0.4, 0.7, 0.8]))
    ]
    t = calibrate(cross + val, ThresholdConfig(), folds=5)
    assert (t.calibration, t.n_normal, t.n_anomaly) == ("val", 3, 3) and t.value == pytest.approx(
        0.4
    )
    t = calibrate(cross + val[1:], ThresholdConfig(), folds=5)  # 2 val normals: all normals count
    assert (t.calibration, t.n_normal) == ("crossfit+val", 6) and t.f1 < 1.0
    few = calibrate(_rows([0.1, 0.2, 0.3], [0.8]), ThresholdConfig(), folds=5)
    assert few.policy == "fpr"  # one val anomaly is not enough to pick by F1
    t = calibrate(_rows([0.1]), ThresholdConfig(policy="fixed", value=0.5), folds=5)
    assert t.value == 0.5
    with pytest.raises(ModelError, match="f1_optimal needs"):
        calibrate(_rows([0.1, 0.2]), ThresholdConfig(policy="f1_optimal"), folds=5)
    with pytest.raises(ValueError, match="needs `threshold.value`"):
        ThresholdConfig(policy="fixed")


def test_quantile_threshold_holds_on_unseen_normals():
    """A threshold on many out-of-fold normal scores keeps the promised false-positive rate on
    new normals; one on five held-out normals does not (the old failure)."""
    rng = np.random.default_rng(0)
    fprs_many, fprs_few = [], []
    for _ in range(200):
        oof = rng.lognormal(0, 0.3, 200)
        few = rng.lognormal(0, 0.3, 5)
        fresh = rng.lognormal(0, 0.3, 2000)
        cfg = ThresholdConfig(policy="normal_quantile", quantile=0.95)
        fprs_many.append((fresh >= calibrate(_rows(oof), cfg, 5).value).mean())
        fprs_few.append((fresh >= calibrate(_rows(few), cfg, 5).value).mean())
    assert abs(np.mean(fprs_many) - 0.05) < 0.01
    assert np.std(fprs_many) < np.std(fprs_few) / 2


def _rec(i, gt, score, dt=None):
    return PredictionRecord(
        image_id=f"i{i}",
        image_path=f"{i}.png",
        score=score,
        normalized_score=score,
        pred_label="anomaly" if score >= 0.5 else "normal",
        gt_label=gt,
        defect_type=dt,
        model_id="m",
    )


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
    assert m.best_f1 == pytest.approx(0.8) and m.f1_gap == pytest.approx(0.3)  # at 0.4: tp 2, fp 1
    d = per_defect(recs)
    assert (
        d["dent"]["auroc"] == 1.0 and d["scratch"]["auroc"] == 0.5 and d["scratch"]["recall"] == 0.0
    )
    only_normal = image_metrics([_rec(0, "normal", 0.1)])
    assert only_normal.status == "skipped" and only_normal.auroc is None
    assert best_f1(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == (1.0, 0.3)


def test_aupro_agrees_with_anomalib():
    from anomalib.metrics.aupro import _AUPRO

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), bool)
    masks[1, 4:12, 4:12] = masks[2, 20:30, 2:6] = masks[2, 2:5, 25:30] = masks[4, 10:20, 10:20] = (
        True
    )
    maps = rng.random((6, 32, 32)).astype(np.float32) + 0.8 * masks
    ref = _AUPRO(fpr_limit=0.3)
    ref.update(torch.from_numpy(maps), torch.from_numpy(masks.astype(np.int64)))
    assert aupro(maps, masks) == pytest.approx(float(ref.compute()), abs=0.01)
    from defectflow.evaluation.metrics import pixel_curves

    assert pixel_curves(maps, masks)[0] == pytest.approx(
        roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9
    )


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


def test_a_flagged_image_always_names_where_its_score_comes_from():
    """Smoothing can bring a map's peak under the threshold while the image score is above it:
    the record still names the area around the peak."""
    from defectflow.artifacts.infer_config import Threshold
    from defectflow.deploy.detector import record

    t = Threshold(
        value=1.0,
        policy="fixed",
        low=0.0,
        spread=1.0,
        n_normal=10,
        n_anomaly=0,
        folds=5,
        calibration_ids_sha256="x",
    )

    class Cfg:  # the few fields a record reads
        threshold, model_id = t, "d/c/m@x"

    m = np.full((28, 28), 0.2, np.float32)
    m[7:14, 14:21] = 0.45  # under 0.5 after smoothing
    flagged = record(Cfg, "i", "i.png", 1.2, m, (280, 140))
    assert flagged.pred_label == "anomaly" and len(flagged.regions) == 1
    assert flagged.regions[0].x0 == 140 and flagged.regions[0].score == pytest.approx(0.45)
    normal = record(Cfg, "i", "i.png", 0.8, m, (280, 140))
    assert normal.pred_label == "normal" and normal.regions == []


def test_a_sealed_threshold_is_half_at_its_value_wherever_it_is():
    from defectflow.artifacts.infer_config import Threshold, normalize
    from defectflow.models.thresholds import follow_threshold

    t = Threshold(
        value=10.0,
        policy="fpr",
        low=6.0,
        spread=4.0,
        n_normal=20,
        n_anomaly=0,
        folds=20,
        normal_scores={"min": 6.0, "median": 8.0, "p95": 9.5, "max": 9.8},
        calibration_ids_sha256="x",
    )
    for value in (12.0, 8.0, 3.0, -5.0):  # above, inside, below the calibration scores
        f = follow_threshold(t.model_copy(update={"value": value}))
        assert normalize(value, f) == pytest.approx(0.5)
        assert f.spread >= 2.0 and f.low + f.spread == pytest.approx(value)
        assert f.false_alarms is None and f.catch_rate is None
        assert normalize(value + 1e-3, f) > 0.5 > normalize(value - 1e-3, f)
