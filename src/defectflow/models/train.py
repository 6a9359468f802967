"""Train: a backend fitted on a category's train normals -> checkpoint + model card, and
cross-fitted out-of-fold scores of every one of those normals (+ the held-out val images scored
by the delivered model) -> ``crossfit.parquet``, the ground the threshold stands on."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from defectflow import device as dev
from defectflow.artifacts.checkpoint import ModelCard, save_checkpoint, write_model_card
from defectflow.artifacts.embeddings import load_features
from defectflow.artifacts.scores import write_scores, write_synthetic_scores
from defectflow.errors import ModelError
from defectflow.features.stored import FIT_SPLITS, load_inputs
from defectflow.models import backends
from defectflow.models.backends.base import Backend
from defectflow.models.combine import run_combine
from defectflow.progress import Progress
from defectflow.threads import set_threads

log = logging.getLogger(__name__)


def fold_of(key: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}:fold:{key}".encode()).hexdigest()[:13], 16) / 16**13


def assign_folds(ids: list[str], groups: list[str | None], k: int, seed: int) -> np.ndarray:
    """Fold of each image: whole groups (``group_id``, else the image) dealt round-robin in a
    seeded hash order, so folds are balanced and a physical part never spans two folds."""
    keys = [g or i for i, g in zip(ids, groups, strict=True)]
    order = sorted(dict.fromkeys(keys), key=lambda g: (fold_of(g, seed), g))
    fold_by_key = {g: n % k for n, g in enumerate(order)}
    return np.array([fold_by_key[g] for g in keys])


def fitted(row: dict[str, Any]) -> bool:
    """A row a model is fitted on: a normal of the train split (val is held out)."""
    return row["label"] != "anomaly" and row["split"] != "val"


def oof_scores(
    backend: Backend,
    data: Any,
    rows: np.ndarray | None = None,
    batch: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """Raw image scores of ``data`` (of its ``rows`` only, when given), in batches so memory
    stays bounded (maps are not needed)."""
    idx = np.arange(len(data)) if rows is None else np.asarray(rows)
    parts = []
    for s in range(0, len(idx), batch):
        parts.append(np.asarray(backend.score(data.subset(idx[s : s + batch]))[0], np.float64))
        if progress is not None:
            progress.update(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros(0)


def cross_fit(
    backend: Backend,
    fit: Any,
    groups: list[str | None],
    *,
    folds: int,
    leave_one_out: int,
    seed: int,
    label: str,
    query: Any = None,
    query_source: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int, str, np.ndarray | None]:
    """Out-of-sample raw scores of every fit row: (scores, fold of each row, folds, how, scores
    of ``query``). ``query``: rows made from fit rows (synthetic defects; ``query_source``: the
    fit row each comes from), each scored by the model of its source's fold.

    Up to ``leave_one_out`` rows, each image (each ``group_id``) is its own fold: its score
    comes from the delivered model less that image alone, so the scores behave like the
    delivered model's scores of new good parts (k folds leave a fifth out, and the threshold
    they give runs high where training images are few). The backend's closed form is used where
    it has one (kNN, PaDiM, PatchCore), else one fold model per fold. Above, ``folds`` folds."""
    n = len(fit)
    loo = 0 < n <= leave_one_out
    k = len({g or i for i, g in zip(fit.ids, groups, strict=True)}) if loo else min(folds, n)
    fold = assign_folds(fit.ids, groups, k, seed)
    qfold = None if query is None else fold[np.asarray(query_source, np.int64)]
    if loo:
        closed = backend.loo_scores(fit, fold)
        if closed is not None:
            q = None if query is None else backend.loo_scores(fit, fold, query, qfold)
            if query is None or q is not None:
                return closed, fold, k, "leave-one-out (closed form, exact)", q
    oof = np.zeros(n)
    qs = None if query is None else np.zeros(len(query))
    p = backend.params
    method = "refit"
    progress = Progress(n, f"{label}: cross-fit scoring", every=10.0)
    for f in range(k):
        held, kept = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        b = backend.fold_model(kept, fit)
        if b is None:
            b = backends.build(p)
            b.fit(fit.subset(kept), seed=seed)
        else:
            method = "derived from the delivered model (see the backend's fold_model)"
        oof[held] = oof_scores(b, fit, held, progress=progress)
        if qs is not None and (mine := np.flatnonzero(qfold == f)).size:
            qs[mine] = oof_scores(b, query, mine)
        if not loo:
            log.info(
                "%s: cross-fit fold %d/%d scored %d held-out normals", label, f + 1, k, len(held)
            )
    return oof, fold, k, ("leave-one-out, " if loo else "") + method, qs


def load_synthetic(
    path: str | None, fit_ids: list[str], patches: bool = True
) -> tuple[Any, list[dict[str, Any]]]:
    """The stored features of a category's synthetic defects (``features/synthetic.py``) and
    their rows (image id, family, strength, ``source``: the fit row each was made from); (None,
    []) without any. Rows whose source is not a fit image are left out."""
    if not path:
        return None, []
    data, _, _, meta = load_features([path], ("synthetic",), patches=patches)
    at = {i: n for n, i in enumerate(fit_ids)}
    by_id = {m["image_id"]: m for m in meta.get("synthetic", [])}
    keep = [n for n, i in enumerate(data.ids) if by_id.get(i, {}).get("source_id") in at]
    rows = [{**by_id[data.ids[n]], "source": at[by_id[data.ids[n]]["source_id"]]} for n in keep]
    return (data.subset(keep) if keep else None), rows


def synthetic_rows(
    rows: list[dict[str, Any]], scores: np.ndarray | None, fold: np.ndarray
) -> list[dict[str, Any]]:
    """``synthetic_scores.parquet`` rows: each synthetic defect's raw score from the model that
    did not see its source image (``fold``: the source's), with its family and strength."""
    return [
        {
            "image_id": r["image_id"],
            "source_id": r["source_id"],
            "family": r["family"],
            "strength": float(r["strength"]),
            "fold": int(fold[r["source"]]),
            "score": float(s),
        }
        for r, s in zip(rows, scores if scores is not None else [], strict=True)
    ]


def run_train(
    table: str | Path,
    feature_files: list[str],
    dataset: str,
    *,
    category: str,
    model: str,
    params: dict[str, Any],
    folds: int,
    leave_one_out: int = 0,
    member_checkpoints: list[str] | None = None,
    member_crossfits: list[str] | None = None,
    synthetic: str | None = None,
    member_synthetic: list[str] | None = None,
    out_ckpt: str | Path,
    out_card: str | Path,
    out_crossfit: str | Path,
    out_synthetic: str | Path | None = None,
    image_size: int = 224,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
) -> ModelCard:
    """Snakemake entry point."""

    set_threads(threads)
    dev.use(device)
    entry = backends.entry(params["backend"])
    if entry.members:  # made from its members' outputs, not fitted on features
        return run_combine(
            params,
            member_checkpoints or [],
            member_crossfits or [],
            dataset,
            category=category,
            model=model,
            out_ckpt=out_ckpt,
            out_card=out_card,
            out_crossfit=out_crossfit,
            member_synthetic=member_synthetic or [],
            out_synthetic=out_synthetic,
            seed=seed,
        )
    p = entry.params.model_validate(params)

    # train normals are fitted (and cross-fitted); val is held out: the delivered model scores
    # it. Loaded apart, so the features are never held twice.
    fit, fit_rows = load_inputs(
        entry.consumes,
        table,
        category,
        feature_files=feature_files,
        image_size=image_size,
        splits=FIT_SPLITS,
        select=fitted,
        patches=entry.patches,
    )
    if len(fit) < 2:
        raise ModelError(
            f"{dataset}/{category}: {len(fit)} normal training image(s); at least 2 are needed"
        )
    backend = backends.build(p)
    t = time.perf_counter()
    facts = backend.fit(fit, seed=seed)
    fit_s = time.perf_counter() - t
    save_checkpoint(backend, out_ckpt)

    t = time.perf_counter()
    syn, syn_rows = load_synthetic(synthetic, fit.ids, patches=entry.patches)
    oof, fold, k, method, syn_scores = cross_fit(
        backend,
        fit,
        [r["group_id"] for r in fit_rows],
        folds=folds,
        leave_one_out=leave_one_out,
        seed=seed,
        label=f"{dataset}/{category}/{model}",
        query=syn,
        query_source=None if syn is None else np.array([r["source"] for r in syn_rows]),
    )
    if out_synthetic is not None:
        write_synthetic_scores(out_synthetic, synthetic_rows(syn_rows, syn_scores, fold))
    out = [
        {
            "image_id": r["image_id"],
            "split": r["split"],
            "label": r["label"] or "normal",
            "fold": int(fo),
            "score": float(s),
        }
        for r, fo, s in zip(fit_rows, fold, oof, strict=True)
    ]
    n_fit = len(fit)
    del fit
    val, held_rows = load_inputs(
        entry.consumes,
        table,
        category,
        feature_files=feature_files,
        image_size=image_size,
        splits=FIT_SPLITS,
        select=lambda r: not fitted(r),
        patches=entry.patches,
    )
    if len(val):
        sc = oof_scores(backend, val)
        out += [
            {
                "image_id": r["image_id"],
                "split": r["split"],
                "label": r["label"] or "normal",
                "fold": -1,
                "score": float(s),
            }
            for r, s in zip(held_rows, sc, strict=True)
        ]
    write_scores(out_crossfit, out)
    cf_s = time.perf_counter() - t
    n_anom = sum(r["label"] == "anomaly" for r in held_rows)
    card = ModelCard(
        dataset=dataset,
        category=category,
        model=model,
        backend=p.backend,
        params=p.fit_params(),
        n_train=n_fit,
        device=dev.current(),
        crossfit={
            "folds": k,
            "scored": n_fit,
            "val_anomalies": n_anom,
            "val_normals": len(held_rows) - n_anom,
            "fold_models": method,
        },
        facts=facts,
        backbone=backend.extra_meta().get("backbone", {}),
        seed=seed,
    )
    write_model_card(card, out_card)
    log.info(
        "%s/%s/%s: fitted on %d images in %.2f s, cross-fit %d folds in %.2f s: %s",
        dataset,
        category,
        model,
        n_fit,
        fit_s,
        k,
        cf_s,
        facts,
    )
    return card
