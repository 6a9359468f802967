"""Standardize: manifest + preflight facts -> ``standardized.parquet`` (one row per usable image)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from defectflow.artifacts.standardized import write_standardized
from defectflow.config import SplitConfig
from defectflow.data.imagefacts import ImageFacts, read_facts
from defectflow.data.ingest import read_manifest
from defectflow.data.preflight_report import read_report
from defectflow.errors import PreflightFailed
from defectflow.io import short_hash
from defectflow.records import Label, ManifestRecord, Split

log = logging.getLogger(__name__)

SPLIT_ORDER = {Split.TRAIN: 0, Split.VAL: 1, Split.TEST: 2}


def image_id(category: str, rel_path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(rel_path).stem)[:40].strip("_.") or "img"
    cat = re.sub(r"[^A-Za-z0-9_.-]+", "_", category)
    return f"{cat}-{stem}-{short_hash(category + '/' + rel_path, 8)}"


def _unit(seed: int, key: str) -> float:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:13], 16) / 16**13


def _usable(
    records: list[ManifestRecord], facts: dict[tuple[str, str], ImageFacts]
) -> list[ManifestRecord]:
    """Drop orphan masks, unreadable images, repeated paths and (downgraded) duplicates/leaks."""
    kept: list[tuple[int, ManifestRecord]] = []
    seen_path: set[str] = set()
    order = sorted(range(len(records)), key=lambda i: (SPLIT_ORDER.get(records[i].split, 1), i))  # type: ignore[arg-type]
    seen_hash: dict[tuple[str, str], str] = {}
    dropped: defaultdict[str, int] = defaultdict(int)
    for i in order:
        r = records[i]
        if r.image_path is None:
            dropped["mask without image"] += 1
            continue
        f = facts[(r.image_path, "image")]
        if not f.readable:
            dropped["unreadable image"] += 1
            continue
        if r.image_path in seen_path:
            dropped["repeated path"] += 1
            continue
        key = (r.category or "", f.sha256 or "")
        if key in seen_hash:
            dropped[f"identical to {seen_hash[key]} image"] += 1
            continue
        seen_path.add(r.image_path)
        seen_hash[key] = r.split or "unassigned"
        if r.mask_path and not facts[(r.mask_path, "mask")].readable:
            r = r.model_copy(update={"mask_path": None})
            dropped["(mask only) unreadable mask"] += 1
        kept.append((i, r))
    for why, n in sorted(dropped.items()):
        log.warning("dropped %d record(s): %s", n, why)
    return [r for _, r in sorted(kept, key=lambda t: t[0])]


def assign_splits(rows: list[dict[str, Any]], cfg: SplitConfig) -> None:
    """Fill missing splits in place, deterministically and group-aware.

    Anomalies without a split go to test. Normal images without a split go to test with
    probability ``test_fraction`` (by a hash of their group, or of their id), else to train.
    A category with no val images then moves ``val_fraction`` of its train normals (whole groups)
    to val, and a category with no val anomaly ``val_from_test`` of its test images; val is held
    out (never fitted) for threshold calibration.
    """
    for row in rows:
        if row["split"] is None:
            row["split_assigned"] = True
            if row["label"] == Label.ANOMALY:
                row["split"] = Split.TEST
            else:
                key = row["group_id"] or row["image_id"]
                row["split"] = (
                    Split.TEST if _unit(cfg.seed, key) < cfg.test_fraction else Split.TRAIN
                )
    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_cat[row["category"]].append(row)
    for cat, cat_rows in by_cat.items():
        if cfg.val_fraction <= 0 or any(r["split"] == Split.VAL for r in cat_rows):
            continue
        train = [r for r in cat_rows if r["split"] == Split.TRAIN and r["label"] != Label.ANOMALY]
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in train:
            groups[r["group_id"] or r["image_id"]].append(r)
        want = round(len(train) * cfg.val_fraction)
        ranked = sorted(groups, key=lambda g: _unit(cfg.seed + 1, g))
        moved = 0
        for g in ranked:
            if moved >= want or len(train) - moved - len(groups[g]) < 1:
                break
            for r in groups[g]:
                r["split"], r["split_assigned"] = Split.VAL, True
            moved += len(groups[g])
        log.info(
            "category %s: %d of %d normal train images held out as val", cat, moved, len(train)
        )
    for cat, cat_rows in by_cat.items():
        _val_from_test(cat, cat_rows, cfg)


def _val_from_test(cat: str, cat_rows: list[dict[str, Any]], cfg: SplitConfig) -> None:
    """Move ``val_from_test`` of a category's test images to val, per stratum (normal, and each
    defect type), whole groups, by a seeded hash, when its val split holds no anomaly. Each
    stratum keeps at least one image in test."""
    if cfg.val_from_test <= 0 or any(
        r["split"] == Split.VAL and r["label"] == Label.ANOMALY for r in cat_rows
    ):
        return
    test = [r for r in cat_rows if r["split"] == Split.TEST and r["label"] is not None]
    if not any(r["label"] == Label.ANOMALY for r in test):
        return
    strata: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in test:
        strata[(str(r["label"]), r["defect_type"] or "")].append(r)
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in test:
        by_group[r["group_id"] or r["image_id"]].append(r)
    moved: set[str] = set()
    for key in sorted(strata):
        rows = strata[key]
        ids = {r["image_id"] for r in rows}
        want = round(len(rows) * cfg.val_from_test)
        done = len(ids & moved)  # moved with a group of another stratum
        groups = sorted(
            {r["group_id"] or r["image_id"] for r in rows},
            key=lambda g: (_unit(cfg.seed + 2, g), g),
        )
        for g in groups:
            if done >= want:
                break
            members = [r for r in by_group[g] if r["image_id"] not in moved]
            here = sum(r["image_id"] in ids for r in members)
            if not here or done + here > len(rows) - 1:
                continue  # the stratum keeps one image in test
            for r in members:
                moved.add(r["image_id"])
                r["split"], r["split_assigned"] = Split.VAL, True
            done += here
    if moved:
        n_anom = sum(r["label"] == Label.ANOMALY for r in test if r["image_id"] in moved)
        log.info(
            "category %s: %d of %d test images (%d normal, %d anomalous) held out as val "
            "for threshold calibration (split.val_from_test)",
            cat,
            len(moved),
            len(test),
            len(moved) - n_anom,
            n_anom,
        )


def standardize_records(
    records: list[ManifestRecord], facts: dict[tuple[str, str], ImageFacts], split_cfg: SplitConfig
) -> list[dict[str, Any]]:
    rows = []
    for r in _usable(records, facts):
        f = facts[(r.image_path, "image")]  # type: ignore[index]
        m = facts.get((r.mask_path, "mask")) if r.mask_path else None
        label = r.label
        if label is None and r.split == Split.TRAIN:
            label = Label.NORMAL
        rel = r.rel_path or Path(r.image_path).name  # type: ignore[arg-type]
        rows.append(
            {
                "image_id": image_id(r.category or "", rel),
                "category": r.category,
                "split": r.split,
                "split_assigned": False,
                "label": label,
                "defect_type": r.defect_type if label == Label.ANOMALY else None,
                "image_path": r.image_path,
                "mask_path": r.mask_path,
                "rel_path": rel,
                "sha256": f.sha256,
                "width": f.width,
                "height": f.height,
                "channels": f.channels,
                "mode": f.mode,
                "bit_depth": f.bit_depth,
                "mask_fraction": m.mask_fraction if m else None,
                "group_id": r.group_id,
                "source_file": r.source.file,
                "source_line": r.source.line,
                "source_type": r.source.type,
            }
        )
    assign_splits(rows, split_cfg)
    rows.sort(
        key=lambda r: (r["category"], SPLIT_ORDER[Split(r["split"])], r["rel_path"], r["image_id"])
    )
    for row in rows:
        row["split"] = str(row["split"])
        row["label"] = str(row["label"]) if row["label"] is not None else None
    ids = [r["image_id"] for r in rows]
    assert len(ids) == len(set(ids)), "image_id collision"
    return rows


def run_standardize(
    manifest: str | Path,
    preflight: str | Path,
    facts: str | Path,
    out: str | Path,
    split: dict[str, Any] | SplitConfig,
) -> int:
    """Snakemake entry point: manifest + preflight -> ``standardized.parquet``."""
    report = read_report(preflight)
    if not report.ok:
        raise PreflightFailed(f"{preflight} has errors; fix them before standardizing")
    cfg = split if isinstance(split, SplitConfig) else SplitConfig.model_validate(split)
    rows = standardize_records(read_manifest(manifest), read_facts(facts), cfg)
    write_standardized(out, rows)
    counts: defaultdict[tuple[str, str, str], int] = defaultdict(int)
    for r in rows:
        counts[(r["category"], r["split"], r["label"] or "unlabeled")] += 1
    for (cat, sp, lab), n in sorted(counts.items()):
        log.info("%-20s %-5s %-9s %6d", cat, sp, lab, n)
    log.info("wrote %d rows to %s", len(rows), out)
    return len(rows)
