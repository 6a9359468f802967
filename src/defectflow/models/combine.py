"""Fit a combined model (``backends/combined.py``) from its members' checkpoints and
out-of-sample scores: no features are loaded and no member is refitted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.artifacts.checkpoint import (
    ModelCard,
    checkpoint_meta,
    load_checkpoint,
    save_checkpoint,
    write_model_card,
)
from defectflow.artifacts.scores import (
    read_scores,
    read_synthetic_scores,
    write_scores,
    write_synthetic_scores,
)
from defectflow.errors import ModelError
from defectflow.models import backends
from defectflow.models.backends.pvalues import (
    fisher,
    neg_log_pvalues,
    out_of_fold_neg_log_pvalues,
)

log = logging.getLogger(__name__)


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["image_id"]: r for r in rows}


def _synthetic(
    names: list[str], files: list[str], members: dict[str, Any], folds: np.ndarray
) -> list[dict[str, Any]]:
    """The combination's scores of the synthetic defects its members scored: each member's
    out-of-fold score against the good scores of the other folds, summed."""
    if len(files) != len(names):
        return []
    per = [_by_id(read_synthetic_scores(f)) for f in files]
    ids = sorted(set.intersection(*(set(p) for p in per))) if per else []
    if not ids:
        return []
    sfold = np.array([per[0][i]["fold"] for i in ids])
    stat = fisher(
        [
            out_of_fold_neg_log_pvalues(
                np.array([p[i]["score"] for i in ids]), sfold, members[n][2], folds
            )
            for n, p in zip(names, per, strict=True)
        ]
    )
    return [{**per[0][i], "score": float(s)} for i, s in zip(ids, stat, strict=True)]


def run_combine(
    params: dict[str, Any],
    member_checkpoints: list[str],
    member_crossfits: list[str],
    dataset: str,
    *,
    category: str,
    model: str,
    out_ckpt: str | Path,
    out_card: str | Path,
    out_crossfit: str | Path,
    member_synthetic: list[str] | None = None,
    out_synthetic: str | Path | None = None,
    seed: int = 0,
) -> ModelCard:
    """The combined model of ``params["members"]`` (in the order of the checkpoint and
    cross-fit files) -> checkpoint, model card and its own out-of-sample scores: each training
    good part's Fisher statistic from its members' leave-one-out scores, each against the other
    training good parts' (exchangeable with a new good part's statistic against all of them),
    and the val images' from the delivered members."""
    p = backends.entry(params["backend"]).params.model_validate(params)
    names = list(p.members)
    if not (len(names) == len(member_checkpoints) == len(member_crossfits)):
        raise ModelError(f"{model}: {len(names)} members but {len(member_checkpoints)} checkpoints")
    rows = [_by_id(read_scores(f)) for f in member_crossfits]
    fitted = sorted(i for i, r in rows[0].items() if r["fold"] >= 0)
    held = sorted(i for i, r in rows[0].items() if r["fold"] < 0)
    for n, r in zip(names, rows, strict=True):
        if sorted(i for i, x in r.items() if x["fold"] >= 0) != fitted:
            raise ModelError(
                f"{dataset}/{category}/{model}: member {n!r} was fitted on other images than "
                f"{names[0]!r}; rerun its train rule"
            )
    members = {}
    for n, ckpt, r in zip(names, member_checkpoints, rows, strict=True):
        ref = np.array([r[i]["score"] for i in fitted], np.float64)
        members[n] = (load_checkpoint(ckpt), checkpoint_meta(ckpt).get("extra", {}), ref)
    combined = backends.build(p)
    combined.set_members(members)  # type: ignore[attr-defined]
    save_checkpoint(combined, out_ckpt)

    folds = np.array([rows[0][i]["fold"] for i in fitted])
    oof = fisher([out_of_fold_neg_log_pvalues(m[2], folds, m[2], folds) for m in members.values()])
    if out_synthetic is not None:
        write_synthetic_scores(
            out_synthetic, _synthetic(names, member_synthetic or [], members, folds)
        )
    val = fisher(
        [
            neg_log_pvalues(np.array([r[i]["score"] for i in held]), members[n][2])
            for n, r in zip(names, rows, strict=True)
        ]
    )
    first = rows[0]
    out = [
        {**{k: first[i][k] for k in ("image_id", "split", "label", "fold")}, "score": float(s)}
        for ids, scores in ((fitted, oof), (held, val))
        for i, s in zip(ids, scores, strict=True)
    ]
    write_scores(out_crossfit, out)
    cards = [checkpoint_meta(c) for c in member_checkpoints]
    facts = combined.facts()  # type: ignore[attr-defined]
    card = ModelCard(
        dataset=dataset,
        category=category,
        model=model,
        backend=p.backend,
        params=p.fit_params(),
        n_train=len(fitted),
        device=cards[0].get("device", "cpu"),
        crossfit={
            "folds": len(fitted),
            "scored": len(fitted),
            "val_anomalies": sum(first[i]["label"] == "anomaly" for i in held),
            "val_normals": sum(first[i]["label"] != "anomaly" for i in held),
            "fold_models": "each good part's members' out-of-sample scores as p-values against "
            "the other good parts'",
        },
        facts=facts,
        backbone=combined.extra_meta().get("backbone", {}),
        seed=seed,
    )
    write_model_card(card, out_card)
    log.info(
        "%s/%s/%s: combined %s over %d good parts", dataset, category, model, names, len(fitted)
    )
    return card
