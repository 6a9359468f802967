"""How many good images are enough: one model refitted on nested, seeded subsets of a category's
training normals (8, 16, 32, ... all), from the stored features (no new embedding), each scored
on the same held-out normals (and on val, with its anomalies). Train and val only: no test image
is read, so no test label reaches the answer."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.artifacts.learning_curve import CurvePoint, LearningCurve, write_learning_curve
from defectflow.errors import ModelError
from defectflow.evaluation.curves import best_f1, roc_auc
from defectflow.features.stored import FIT_SPLITS, load_inputs
from defectflow.models import backends
from defectflow.models.train import assign_folds, fitted, load_synthetic, oof_scores
from defectflow.threads import set_threads

log = logging.getLogger(__name__)

MIN_PROBE = 4  # held-out normals the curve needs at the least
FLAT_AUROC = 0.01  # val AUROC gained over the last two doublings below which the curve is flat
FLAT_QUANTILE = 0.05  # relative fall of the held-out normal-score quantile, likewise


def sizes(n: int, start: int = 8) -> list[int]:
    """8, 16, 32, ... below ``n``, then ``n``."""
    out, s = [], start
    while s < n:
        out.append(s)
        s *= 2
    return out + [n]


def judge(points: list[CurvePoint], has_val: bool) -> tuple[str, str, str]:
    """Still improving over the last two doublings, at its ceiling, or flat: (judged_by,
    verdict, sentence). Judged by val AUROC where val has defects, else by the synthetic
    defects' AUROC where there are some, and always also by the held-out normals' score
    quantile: a curve that reached its ceiling within the last doublings is not flat (it needed
    them), and falling normal scores mean fewer false alarms at the same catch rate."""
    has_syn = all(p.synthetic_auroc is not None for p in points)
    key = "val_auroc" if has_val else "synthetic_auroc" if has_syn else "normal_q95"
    if len(points) < 3:
        return (
            key,
            "too few images to tell",
            (
                f"Too few training normals ({points[-1].n_train}) for a curve: add images and look again."
            ),
        )
    last, before = points[-1], points[-3]  # ~ two doublings apart
    qa, qb = before.normal_q95, last.normal_q95
    falling = (qa - qb) > FLAT_QUANTILE * max(abs(qa), 1e-12)
    normal_what = (
        f"the held-out normals' 95% score quantile went from {qa:.4g} at {before.n_train} to "
        f"{qb:.4g} at {last.n_train} images"
    )
    if key == "normal_q95":
        what, improving, ceiling = normal_what, falling, False
    else:
        name = "val AUROC" if key == "val_auroc" else "synthetic-defect AUROC"
        a, b = getattr(before, key) or 0.0, getattr(last, key) or 0.0
        ceiling = b >= 1 - FLAT_AUROC and b - a > FLAT_AUROC
        improving = b - a > FLAT_AUROC and not ceiling
        what = f"{name} went from {a:.3f} at {before.n_train} to {b:.3f} at {last.n_train} images"
        if not improving and falling and not ceiling:
            improving, what = True, f"{what}, and {normal_what}"
    if ceiling:
        more = (
            "good parts still score lower with more images: more would lower false alarms at "
            "the same catch rate"
            if falling
            else "more are unlikely to raise it further"
        )
        return (
            key,
            "reached its ceiling",
            f"Reached its ceiling within the last two doublings: {what}. It needed those images "
            f"(keep at least this many); {more}.",
        )
    if improving:
        return key, "improving", f"Still improving: {what}; more good images are likely to help."
    return (
        key,
        "flat",
        (f"Flat over the last two doublings: {what}; more good images are unlikely to help much."),
    )


def learning_curve(
    table: str | Path,
    feature_files: list[str],
    *,
    dataset: str,
    category: str,
    model: str,
    params: dict[str, Any],
    seed: int = 0,
    start: int = 8,
    synthetic: str | None = None,
) -> LearningCurve:
    entry = backends.entry(params["backend"])
    if entry.consumes != "features":
        raise ModelError(
            f"{model}: the learning curve refits on stored features; backend {entry.name!r} "
            "trains on images (its curve would retrain the network at every size)"
        )
    p = entry.params.model_validate(params)

    common = dict(
        feature_files=feature_files, image_size=0, splits=FIT_SPLITS, patches=entry.patches
    )
    train, train_rows = load_inputs(entry.consumes, table, category, select=fitted, **common)
    val, val_rows = load_inputs(
        entry.consumes, table, category, select=lambda r: not fitted(r), **common
    )
    y_val = np.array([r["label"] == "anomaly" for r in val_rows])
    n_val_normal = int((~y_val).sum())
    # the probe: val normals when there are enough, else a fold of the training normals
    # (whole groups) that no subset ever fits
    if n_val_normal >= 2 * MIN_PROBE:
        pool, probe_idx, probe = np.arange(len(train)), None, "val normals"
    else:
        k = max(2, min(5, len(train) // MIN_PROBE))
        fold = assign_folds(train.ids, [r["group_id"] for r in train_rows], k, seed)
        probe_idx, pool = np.flatnonzero(fold == 0), np.flatnonzero(fold != 0)
        probe = "held-out train normals"
    if len(pool) < 2:
        raise ModelError(f"{dataset}/{category}: {len(pool)} training normals; a curve needs more")
    order = np.random.default_rng(seed).permutation(pool)
    syn, syn_rows = load_synthetic(synthetic, train.ids, patches=entry.patches)
    syn_source = np.array([r["source"] for r in syn_rows], np.int64)
    points = []
    for n in sizes(len(order), start):
        t = time.perf_counter()
        b = backends.build(p)
        b.fit(train.subset(np.sort(order[:n])), seed=seed)
        fit_s = time.perf_counter() - t
        val_s = oof_scores(b, val)  # once: the probe (val normals) and val AUROC share it
        normal = oof_scores(b, train, probe_idx) if probe_idx is not None else val_s[~y_val]
        point = CurvePoint(
            n_train=n,
            normal_q95=round(float(np.quantile(normal, 0.95)), 6),
            normal_median=round(float(np.median(normal)), 6),
            fit_s=round(fit_s, 3),
        )
        if syn is not None:  # made from images this subset did not fit
            unseen = np.flatnonzero(~np.isin(syn_source, order[:n]))
            if len(unseen) and len(normal):
                s = oof_scores(b, syn, unseen)
                y = np.r_[np.zeros(len(normal), bool), np.ones(len(s), bool)]
                point.synthetic_auroc = round(roc_auc(y, np.r_[normal, s]), 6)
        if y_val.any() and (~y_val).any():
            point.val_auroc = round(roc_auc(y_val, val_s), 6)
            point.val_best_f1 = round(best_f1(y_val, val_s)[0], 6)
        points.append(point)
        log.info("%s/%s/%s: learning curve at %d images: %s", dataset, category, model, n, point)
    has_val = points[-1].val_auroc is not None and int(y_val.sum()) >= 3
    judged_by, verdict, sentence = judge(points, has_val)
    return LearningCurve(
        dataset=dataset,
        category=category,
        model=model,
        n_available=len(train),
        probe=probe,
        n_probe=len(probe_idx) if probe_idx is not None else n_val_normal,
        n_val_anomalies=int(y_val.sum()),
        seed=seed,
        points=points,
        judged_by=judged_by,
        verdict=verdict,
        sentence=sentence,
    )


def run_learning_curve(
    table: str | Path,
    feature_files: list[str],
    *,
    dataset: str,
    category: str,
    model: str,
    params: dict[str, Any],
    out: str | Path,
    seed: int = 0,
    start: int = 8,
    threads: int = 1,
    synthetic: str | None = None,
) -> LearningCurve:
    """Snakemake entry point."""
    set_threads(threads)
    curve = learning_curve(
        table,
        feature_files,
        dataset=dataset,
        category=category,
        model=model,
        params=params,
        seed=seed,
        start=start,
        synthetic=synthetic,
    )
    write_learning_curve(curve, out)
    log.info("%s/%s/%s: %s", dataset, category, model, curve.sentence)
    return curve
