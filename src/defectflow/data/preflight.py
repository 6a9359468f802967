"""The data gate: every check of records and image facts that breaks anomaly detection in
practice, as coded issues (:mod:`defectflow.codes`); ``run_preflight`` is the workflow's step."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.config import PreflightConfig
from defectflow.data.imagefacts import ImageFacts, inspect_files, write_facts
from defectflow.data.ingest import read_manifest
from defectflow.data.preflight_report import (
    CategorySummary,
    Collector,
    PreflightReport,
    format_summary,
    write_report,
)
from defectflow.errors import PreflightFailed
from defectflow.features.preprocess import MIN_SIDE
from defectflow.records import Label, ManifestRecord, Severity, Split

log = logging.getLogger(__name__)


def _ctx(i: int, r: ManifestRecord) -> dict[str, Any]:
    return {
        "record": i,
        "path": r.image_path or r.mask_path,
        "file": r.source.file,
        "line": r.source.line,
        "category": r.category,
    }


def _hash_words(hexes: list[str]) -> np.ndarray:
    return np.array(
        [np.frombuffer(bytes.fromhex(h), dtype=np.uint64) for h in hexes], dtype=np.uint64
    ).reshape(len(hexes), -1)


def nearest_within(a: list[str], b: list[str], max_d: int) -> list[tuple[int, int, int]]:
    """For each hash in ``b``, its nearest hash in ``a`` if at most ``max_d`` bits differ.

    Returns ``(i in a, j in b, distance)``, at most one per ``j``: a report stays as long as the
    test set however alike the images are (industrial images of one product often are).
    """
    if not a or not b:
        return []
    A, B = _hash_words(a), _hash_words(b)
    out = []
    for start in range(0, len(B), 256):
        block = B[start : start + 256, None, :] ^ A[None, :, :]
        d = np.bitwise_count(block).sum(axis=-1, dtype=np.int64)
        best = d.argmin(axis=1)
        for j, i in enumerate(best):
            if d[j, i] <= max_d:
                out.append((int(i), start + j, int(d[j, i])))
    return out


def check_records(
    records: list[ManifestRecord],
    facts: dict[tuple[str, str], ImageFacts],
    cfg: PreflightConfig,
    col: Collector,
) -> None:
    """Every check that needs records (and file facts)."""
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        ctx = _ctx(i, r)
        if r.image_path is None:
            if r.mask_path is not None:
                col.add("MASK_ORPHAN", f"mask {r.mask_path} has no image", **ctx)
            elif r.meta.get("orphan_label"):
                col.add(
                    "LABEL_ORPHAN",
                    f"label file {r.meta['orphan_label']} has no image "
                    f"({r.meta.get('why', 'none found')})",
                    **{**ctx, "path": r.meta["orphan_label"]},
                )
            else:
                col.add(
                    "IMAGE_PATH_MISSING",
                    "record names no image (its image path field is absent or empty)",
                    **ctx,
                )
            continue
        if not r.category:
            col.add("CATEGORY_MISSING", f"record has no category ({r.image_path})", **ctx)
        elif "/" in r.category or "\\" in r.category or r.category in {".", ".."}:
            col.add("CATEGORY_INVALID", f"category {r.category!r} cannot be a folder name", **ctx)
        else:
            by_cat[r.category].append(i)
        if r.split is not None and r.split not in Split.__members__.values():
            col.add("SPLIT_INVALID", f"split {r.split!r} is not one of train/val/test", **ctx)
        if r.label is not None and r.label not in Label.__members__.values():
            col.add("LABEL_INVALID", f"label {r.label!r} is not normal/anomaly", **ctx)
        if r.label is None and r.split in (Split.VAL, Split.TEST):
            col.add("LABEL_MISSING", f"{r.split} image has no label", **ctx)
        if r.label == Label.ANOMALY and r.split == Split.TRAIN:
            col.add("ANOMALY_IN_TRAIN", "anomalous image in the train split", **ctx)
        f = facts[(r.image_path, "image")]
        if f.readable and min(f.width or 0, f.height or 0) < MIN_SIDE:
            col.add("IMAGE_TINY", f"image {r.image_path} is {f.width}x{f.height} px", **ctx)
        if f.readable and f.n_frames > 1:
            col.add(
                "IMAGE_ANIMATED",
                f"image {r.image_path} has {f.n_frames} frames; the first is used",
                **ctx,
            )
        if not f.exists:
            col.add("IMAGE_MISSING", f"image {r.image_path} does not exist ({f.error})", **ctx)
        elif f.truncated:
            col.add("IMAGE_TRUNCATED", f"image {r.image_path}: {f.error}", **ctx)
        elif not f.readable:
            col.add("IMAGE_UNREADABLE", f"image {r.image_path}: {f.error}", **ctx)
        if r.mask_path is not None:
            m = facts[(r.mask_path, "mask")]
            if not m.exists:
                col.add("MASK_MISSING", f"mask {r.mask_path} does not exist", **ctx)
            elif not m.readable:
                col.add("MASK_UNREADABLE", f"mask {r.mask_path}: {m.error}", **ctx)
            else:
                if f.readable and (m.width, m.height) != (f.width, f.height):
                    col.add(
                        "MASK_SIZE_MISMATCH",
                        f"mask is {m.width}x{m.height}, image is {f.width}x{f.height}",
                        **ctx,
                        mask=r.mask_path,
                    )
                frac = m.mask_fraction or 0.0
                if r.label == Label.ANOMALY and frac == 0.0:
                    col.add("MASK_EMPTY", f"mask {r.mask_path} has no foreground pixel", **ctx)
                if frac >= 0.99:
                    col.add(
                        "MASK_FULL", f"mask {r.mask_path} covers {frac:.1%} of the image", **ctx
                    )
                if r.label == Label.NORMAL and frac > 0.0:
                    col.add(
                        "MASK_ON_NORMAL",
                        f"normal image has a mask covering {frac:.2%}",
                        **ctx,
                        mask=r.mask_path,
                    )
    _check_duplicates(records, facts, cfg, col)
    _check_groups(records, col)
    for cat, idx in sorted(by_cat.items()):
        _check_category(cat, [records[i] for i in idx], facts, cfg, col)


def _split_of(r: ManifestRecord) -> str:
    return r.split or "unassigned"


def _check_duplicates(
    records: list[ManifestRecord],
    facts: dict[tuple[str, str], ImageFacts],
    cfg: PreflightConfig,
    col: Collector,
) -> None:
    by_path: dict[str, list[int]] = defaultdict(list)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.image_path is None:
            continue
        by_path[r.image_path].append(i)
        sha = facts[(r.image_path, "image")].sha256
        if sha:
            by_hash[sha].append(i)
    for path, idx in by_path.items():
        if len(idx) < 2:
            continue
        splits = {_split_of(records[i]) for i in idx}
        labels = {records[i].label for i in idx if records[i].label}
        if len(labels) > 1:
            col.add(
                "DUPLICATE_LABEL_CONFLICT",
                f"{path} is listed as {sorted(labels)}",
                **_ctx(idx[1], records[idx[1]]),
                records=idx,
            )
        code = "LEAKAGE_EXACT" if Split.TEST in splits and len(splits) > 1 else "DUPLICATE_PATH"
        col.add(
            code,
            f"{path} is listed {len(idx)} times (splits: {sorted(splits)})",
            **_ctx(idx[1], records[idx[1]]),
            records=idx,
        )
    for sha, idx in by_hash.items():
        paths = {records[i].image_path for i in idx}
        if len(paths) < 2:
            continue
        first = {}
        for i in idx:
            first.setdefault(records[i].image_path, i)
        idx = sorted(first.values())
        labels = {records[i].label for i in idx if records[i].label}
        splits = {_split_of(records[i]) for i in idx}
        names = [records[i].image_path for i in idx]
        if len(labels) > 1:
            col.add(
                "DUPLICATE_LABEL_CONFLICT",
                f"identical images with labels {sorted(labels)}: {names}",
                **_ctx(idx[1], records[idx[1]]),
                records=idx,
            )
        if Split.TEST in splits and len(splits) > 1:
            col.add(
                "LEAKAGE_EXACT",
                f"identical images in splits {sorted(splits)}: {names}",
                **_ctx(idx[1], records[idx[1]]),
                records=idx,
                sha256=sha,
            )
        else:
            col.add(
                "DUPLICATE_CONTENT",
                f"identical images: {names}",
                **_ctx(idx[1], records[idx[1]]),
                records=idx,
                sha256=sha,
            )
    if cfg.near_duplicate_distance < 0:
        return
    fit: dict[str, list[int]] = defaultdict(list)
    test: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.image_path is None or facts[(r.image_path, "image")].dhash is None:
            continue
        (
            test if r.split == Split.TEST else fit if r.split in (Split.TRAIN, Split.VAL) else {}
        ).setdefault(r.category or "", []).append(i)
    for cat, t_idx in test.items():
        f_idx = fit.get(cat, [])
        fit_sha = {facts[(records[i].image_path, "image")].sha256 for i in f_idx}  # type: ignore[index]
        t_idx = [i for i in t_idx if facts[(records[i].image_path, "image")].sha256 not in fit_sha]  # type: ignore[index]
        f_hash = [facts[(records[i].image_path, "image")].dhash for i in f_idx]  # type: ignore[index]
        t_hash = [facts[(records[i].image_path, "image")].dhash for i in t_idx]  # type: ignore[index]
        for a, b, d in nearest_within(f_hash, t_hash, cfg.near_duplicate_distance):
            ra, rb = records[f_idx[a]], records[t_idx[b]]
            col.add(
                "LEAKAGE_NEAR",
                f"test image {rb.image_path} looks like {ra.split} image {ra.image_path} (dHash distance {d})",
                **_ctx(t_idx[b], rb),
                similar_to=ra.image_path,
                distance=d,
            )


def _check_groups(records: list[ManifestRecord], col: Collector) -> None:
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    first: dict[tuple[str, str], int] = {}
    for i, r in enumerate(records):
        if r.group_id and r.image_path and r.split:
            key = (r.category or "", r.group_id)
            groups[key].add(r.split)
            first.setdefault(key, i)
    for (cat, gid), splits in sorted(groups.items()):
        if len(splits) > 1:
            i = first[(cat, gid)]
            col.add(
                "GROUP_LEAKAGE",
                f"group {gid!r} of category {cat!r} is in splits {sorted(splits)}",
                **_ctx(i, records[i]),
                group_id=gid,
            )


def _check_category(
    cat: str,
    recs: list[ManifestRecord],
    facts: dict[tuple[str, str], ImageFacts],
    cfg: PreflightConfig,
    col: Collector,
) -> None:
    usable = [r for r in recs if facts[(r.image_path, "image")].readable]  # type: ignore[index]
    normal_train = [
        r for r in usable if r.split in (Split.TRAIN, None) and r.label in (Label.NORMAL, None)
    ]
    ctx = {"category": cat}
    if not normal_train:
        col.add("NO_NORMAL_TRAIN", f"category {cat!r} has no usable normal training image", **ctx)
    elif len(normal_train) < cfg.min_train_images:
        col.add(
            "FEW_TRAIN_IMAGES",
            f"category {cat!r} has {len(normal_train)} normal training images (< {cfg.min_train_images})",
            **ctx,
        )
    if not any(r.label == Label.ANOMALY and r.split in (Split.TEST, None) for r in usable):
        col.add("NO_TEST_ANOMALIES", f"category {cat!r} has no anomalous test image", **ctx)
    test_anomalies = [r for r in usable if r.label == Label.ANOMALY and r.split == Split.TEST]
    if test_anomalies and not any(
        r.label == Label.NORMAL and r.split in (Split.TEST, None) for r in usable
    ):
        col.add(
            "NO_TEST_NORMALS",
            f"category {cat!r} has {len(test_anomalies)} anomalous test images and no normal one",
            **ctx,
        )
    if not any(r.split == Split.VAL for r in usable):
        col.add(
            "NO_VAL_IMAGES",
            f"category {cat!r} has no val images: `split.val_from_test` holds out a share of its labelled "
            "test images as val (the default), else the threshold rests on cross-fitted training normals",
            **ctx,
        )
    no_mask = [r for r in usable if r.label == Label.ANOMALY and r.mask_path is None]
    if no_mask:
        col.add(
            "MASK_ABSENT",
            f"{len(no_mask)} anomalous images of {cat!r} have no mask: pixel metrics will be skipped",
            **ctx,
            count=len(no_mask),
        )
    f = [facts[(r.image_path, "image")] for r in usable]  # type: ignore[index]
    chans = Counter(x.channels for x in f)
    depths = Counter(x.bit_depth for x in f)
    sizes = Counter((x.width, x.height) for x in f)
    if len(chans) > 1:
        col.add(
            "MODE_MIX",
            f"category {cat!r} mixes channel counts {dict(sorted(chans.items()))}",
            **ctx,
        )
    if len(depths) > 1:
        col.add(
            "BIT_DEPTH_MIX",
            f"category {cat!r} mixes bit depths {dict(sorted(depths.items()))}",
            **ctx,
        )
    if len(sizes) > 1:
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
        col.add(
            "SIZE_MIX",
            f"category {cat!r} has {len(sizes)} image sizes; most common: {common}",
            **ctx,
        )


def summarize(
    records: list[ManifestRecord], facts: dict[tuple[str, str], ImageFacts]
) -> dict[str, CategorySummary]:
    out: dict[str, CategorySummary] = {}
    by_cat: dict[str, list[ManifestRecord]] = defaultdict(list)
    for r in records:
        if r.image_path:
            by_cat[r.category or "?"].append(r)
    for cat, recs in sorted(by_cat.items()):
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in recs:
            counts[_split_of(r)][r.label or "unlabeled"] += 1
        anomalies = [r for r in recs if r.label == Label.ANOMALY]
        with_mask = [r for r in anomalies if r.mask_path and facts[(r.mask_path, "mask")].readable]
        fs = [facts[(r.image_path, "image")] for r in recs]  # type: ignore[index]
        out[cat] = CategorySummary(
            counts={k: dict(v) for k, v in sorted(counts.items())},
            anomalies=len(anomalies),
            anomalies_with_mask=len(with_mask),
            mask_coverage=round(len(with_mask) / len(anomalies), 4) if anomalies else 0.0,
            sizes=len({(x.width, x.height) for x in fs if x.readable}),
            modes=sorted({x.mode for x in fs if x.mode}),
        )
    return out


def inspect_records(
    records: list[ManifestRecord], full: bool, workers: int = 0
) -> dict[tuple[str, str], ImageFacts]:
    """Facts for every distinct image and mask path of the records."""
    items = list(
        dict.fromkeys(
            [(r.image_path, "image") for r in records if r.image_path]
            + [(r.mask_path, "mask") for r in records if r.mask_path]
        )
    )
    facts = inspect_files(items, full=full, workers=workers)  # type: ignore[arg-type]
    return {(f.path, f.kind): f for f in facts}


def preflight_records(
    records: list[ManifestRecord],
    cfg: PreflightConfig,
    dataset: str,
    manifest: str,
) -> tuple[PreflightReport, dict[tuple[str, str], ImageFacts]]:
    """Run every check; return the report and the per-file facts (the memory projection of the
    configured models is :mod:`defectflow.models.memory`, a step of its own)."""
    facts = inspect_records(records, full=cfg.verify == "full", workers=cfg.threads)
    col = Collector(cfg)
    check_records(records, facts, cfg, col)
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    issues = sorted(col.issues, key=lambda x: (order[x.severity], x.code))
    counts = {s.value: sum(1 for x in issues if x.severity == s) for s in Severity}
    report = PreflightReport(
        dataset=dataset,
        manifest=manifest,
        verify=cfg.verify,
        ok=counts["error"] == 0,
        counts=counts,
        n_records=len(records),
        n_images=len({r.image_path for r in records if r.image_path}),
        categories=summarize(records, facts),
        issues=issues,
        ignored_codes=sorted(cfg.ignore),
    )
    return report, facts


def run_preflight(
    manifest: str | Path,
    report_out: str | Path,
    facts_out: str | Path | None,
    *,
    checks: dict[str, Any] | PreflightConfig,
    dataset: str,
    report_copy: str | Path | None = None,
    threads: int = 1,
) -> PreflightReport:
    """Snakemake entry point: ``manifest.jsonl`` -> ``preflight.json`` (+ facts table).

    On errors the report is still written to ``report_copy`` (a log file that survives the failed
    job) and :class:`PreflightFailed` is raised with the summary.
    """

    cfg = checks if isinstance(checks, PreflightConfig) else PreflightConfig.model_validate(checks)
    cfg = cfg.model_copy(update={"threads": threads})
    records = read_manifest(manifest)
    report, facts = preflight_records(records, cfg, dataset, str(manifest))
    summary = format_summary(report)
    if report_copy:
        write_report(report, report_copy)
    if not report.ok:
        raise PreflightFailed(f"\n{summary}\nFull report: {report_copy or report_out}")
    log.info("\n%s", summary)
    if facts_out:
        write_facts(list(facts.values()), facts_out)
    write_report(report, report_out)
    return report
