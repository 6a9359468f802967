"""The combined detector: calibrated p-values of its members, summed (Fisher)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from defectflow.artifacts.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint
from defectflow.artifacts.scores import write_scores
from defectflow.config import ThresholdConfig, parse_config
from defectflow.errors import ConfigError
from defectflow.models import backends
from defectflow.models.backends.base import Features
from defectflow.models.backends.pvalues import fisher, loo_neg_log_pvalues, neg_log_pvalues
from defectflow.models.combine import run_combine
from defectflow.models.thresholds import calibrate
from defectflow.models.train import assign_folds, cross_fit


def test_neg_log_pvalues_rise_with_the_score_everywhere():
    ref = np.random.default_rng(0).gamma(2.0, size=40)
    s = np.linspace(ref.min() - 3, ref.max() + 3, 2001)
    nlp = neg_log_pvalues(s, ref)
    assert (np.diff(nlp) > 0).all()  # no ties below, within or beyond the good scores
    at_max = neg_log_pvalues(np.array([ref.max()]), ref)[0]
    assert at_max == pytest.approx(np.log(41))  # the conformal p-value 1/(n+1) at the maximum


def test_loo_pvalues_of_exchangeable_good_scores_are_uniform():
    """A good part's p-value against the other good parts' scores is uniform on (0, 1] (up to
    the 1/(n+1) grid): its share at or below any level is that level."""
    rng = np.random.default_rng(1)
    p = np.concatenate([np.exp(-loo_neg_log_pvalues(rng.lognormal(size=50))) for _ in range(400)])
    for level in (0.1, 0.25, 0.5, 0.8):
        assert np.mean(p <= level) == pytest.approx(level, abs=0.025)


def test_combined_threshold_holds_its_false_alarm_rate_on_new_good_parts():
    """Two dependent members (one score a noisy copy of the other): the combination's
    threshold from its own leave-one-out statistics flags new good parts at the stated rate,
    over many draws (Fisher's chi-square would not: the members are correlated)."""
    rng = np.random.default_rng(2)
    rates = []
    for _ in range(300):
        a = rng.lognormal(size=(60 + 200))
        b = a + 0.3 * rng.standard_normal(len(a))
        ref, new = slice(0, 60), slice(60, None)
        stat = fisher([loo_neg_log_pvalues(a[ref]), loo_neg_log_pvalues(b[ref])])
        rows = [
            {"image_id": str(i), "label": "normal", "score": s, "fold": i}
            for i, s in enumerate(stat)
        ]
        thr = calibrate(rows, ThresholdConfig(policy="fpr", fpr=0.1), 60)
        t_new = fisher([neg_log_pvalues(a[new], a[ref]), neg_log_pvalues(b[new], b[ref])])
        rates.append(np.mean(t_new > thr.value))
    assert np.mean(rates) == pytest.approx(0.1, abs=0.02)
    assert thr.false_alarms.expected <= 0.1


def _features(n, rng, shift=0.0):
    base = np.random.default_rng(9).standard_normal((8, 6, 6))
    patch = (base + 0.4 * rng.standard_normal((n, 8, 6, 6))).astype(np.float32)
    patch[:, :, 2:4, 2:4] += shift
    return Features([f"i{k}" for k in range(n)], patch, patch.reshape(n, -1))


def _member(tmp_path, name, params, train):
    b = backends.build(params)
    b.fit(train)
    fold = assign_folds(train.ids, [None] * len(train), len(train), 0)
    oof, fold, _, _, _ = cross_fit(
        b, train, [None] * len(train), folds=5, leave_one_out=100, seed=0, label=name
    )
    save_checkpoint(b, tmp_path / f"{name}.safetensors")
    write_scores(
        tmp_path / f"{name}.parquet",
        [
            {"image_id": i, "split": "train", "label": "normal", "fold": int(f), "score": float(s)}
            for i, f, s in zip(train.ids, fold, oof, strict=True)
        ],
    )
    return b, oof


def test_combined_model_scores_as_its_members_say_and_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    train, good, bad = _features(30, rng), _features(20, rng), _features(20, rng, shift=1.5)
    members = {"knn": {"backend": "knn"}, "padim": {"backend": "padim"}}
    fitted = {n: _member(tmp_path, n, p, train) for n, p in members.items()}
    params = {"backend": "combined", "members": list(members)}
    run_combine(
        params,
        [str(tmp_path / f"{n}.safetensors") for n in members],
        [str(tmp_path / f"{n}.parquet") for n in members],
        "d",
        category="c",
        model="combined",
        out_ckpt=tmp_path / "c.safetensors",
        out_card=tmp_path / "card.json",
        out_crossfit=tmp_path / "cf.parquet",
    )
    combined = load_checkpoint(tmp_path / "c.safetensors")  # as `defectflow infer` loads it
    assert checkpoint_meta(tmp_path / "c.safetensors")["params"]["members"] == ["knn", "padim"]
    test = Features(
        good.ids + [f"b{i}" for i in range(20)],
        np.concatenate([good.patch, bad.patch]),
        np.concatenate([good.image, bad.image]),
    )
    score, maps = combined.score(test)
    by_hand = fisher([neg_log_pvalues(b.score(test)[0], oof) for b, oof in fitted.values()])
    np.testing.assert_allclose(score, by_hand, rtol=1e-9)
    y = np.r_[np.zeros(20), np.ones(20)]
    assert roc_auc_score(y, score) > 0.95
    assert maps.shape == (40, 6, 6)
    peak = maps[20:].reshape(20, -1).argmax(1)
    assert np.isin(peak // 6, [1, 2, 3, 4]).mean() > 0.8  # where the defect is


def test_config_resolves_and_checks_combined_members():
    def cfg(models=None):
        data = {"datasets": {"demo": {"sources": [{"type": "demo"}]}}}
        return parse_config(data | ({"models": models} if models else {}))

    assert cfg().models["combined"].members == ["knn", "patchcore", "padim"]
    assert cfg({"a": {"backend": "knn"}, "c": {"backend": "combined"}}).models["c"].members == ["a"]
    with pytest.raises(ConfigError, match=r"members: \['knnn'\].*usable: \['a'\]"):
        cfg({"a": {"backend": "knn"}, "c": {"backend": "combined", "members": ["knnn"]}})
    with pytest.raises(ConfigError, match="no feature model to combine"):
        cfg({"c": {"backend": "combined"}})
    # a user's file drops a default model with `name: null` (merged over config.yaml's)
    dropped = cfg({"a": {"backend": "knn"}, "b": None, "c": {"backend": "combined"}})
    assert sorted(dropped.models) == ["a", "c"] and dropped.models["c"].members == ["a"]


def test_synthetic_defects_are_seeded_and_marked_where_they_are(tmp_path):
    from PIL import Image

    from defectflow.features.synthetic import FAMILIES, _rng, make_defect, plan

    rng = np.random.default_rng(0)
    img = Image.fromarray((100 + 20 * rng.random((96, 128))).astype(np.uint8), "L")
    donor = Image.fromarray((150 + 20 * rng.random((96, 128))).astype(np.uint8), "L")
    for fam in FAMILIES:
        a, ma = make_defect(img, donor, fam, 1.0, _rng(0, "x", fam))
        b, mb = make_defect(img, donor, fam, 1.0, _rng(0, "x", fam))
        assert a.tobytes() == b.tobytes() and ma.tobytes() == mb.tobytes(), fam  # same seed
        assert a.mode == "L" and a.size == img.size
        diff = np.abs(np.asarray(a, np.int16) - np.asarray(img, np.int16)) > 2
        inside = np.asarray(ma) > 0
        assert inside.any() and diff[inside].mean() > 0.3, fam  # the defect is in its mask
        assert diff[~inside].mean() < 0.05, fam  # and little outside it
    rows = [{"image_id": f"i{k}", "image_path": f"p{k}"} for k in range(12)]
    todo = plan(rows, per_image=2, max_images=100, seed=0)
    assert len(todo) == 24 and {t["family"] for t in todo} == set(FAMILIES)
    assert all(t["donor_path"] != f"p{t['source_id'][1:]}" for t in todo)
    assert plan(rows, 2, 100, 0) == todo and len(plan(rows, 2, 10, 0)) == 10


@pytest.mark.parametrize("name", ["knn", "padim", "patchcore"])
def test_a_synthetic_defect_is_scored_by_a_model_that_never_saw_its_source(name):
    """Out of fold: its score is the score of a model fitted without its source image."""
    rng = np.random.default_rng(4)
    train, syn = _features(14, rng), _features(14, rng, shift=1.0)
    source = np.array([(3 * k) % 14 for k in range(14)])
    params = {"backend": name} | ({"coreset_ratio": 0.5} if name == "patchcore" else {})
    b = backends.build(params)
    b.fit(train)
    _, fold, _, _, got = cross_fit(
        b,
        train,
        [None] * 14,
        folds=5,
        leave_one_out=100,
        seed=0,
        label="t",
        query=syn,
        query_source=source,
    )
    for j in range(14):
        keep = np.flatnonzero(fold != fold[source[j]])
        if (
            name == "patchcore"
        ):  # PatchCore's fold model: the delivered bank less the fold's entries
            ref = b.fold_model(keep, train)
        else:
            ref = backends.build(params)
            ref.fit(train.subset(keep))
        np.testing.assert_allclose(got[j], ref.score(syn.subset([j]))[0][0], rtol=1e-4)


def test_pick_without_labels_is_the_combined_model_and_reads_no_test_label():
    from defectflow.evaluation.leaderboard import _pick

    def rows(aurocs):
        return [
            {"model": m, "image_auroc": a, "selection_signal": -s, "selection_rule": r}
            for (m, a, s, r) in zip(
                ("knn", "padim", "combined"),
                aurocs,
                (0.1, 0.5, 0.3),
                (None, None, "combined: no labelled defects"),
                strict=True,
            )
        ]

    assert _pick(rows([0.9, 0.8, 0.85]))["model"] == "combined"
    assert _pick(rows([0.1, 0.2, 0.3]))["model"] == "combined"  # test labels flipped: same pick
    single = [r for r in rows([0.9, 0.8, 0.85]) if r["model"] != "combined"]
    assert _pick(single)["model"] == "knn" and single[0]["selection_rule"].startswith("spread")
    labelled = [
        dict(r, selection_rule="val F1", selection_signal=f)
        for r, f in zip(rows([0.9, 0.8, 0.85]), (0.7, 0.9, 0.8), strict=True)
    ]
    assert _pick(labelled)["model"] == "padim"
