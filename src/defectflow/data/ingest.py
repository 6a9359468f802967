"""Sources -> normalized ``manifest.jsonl`` records: each of a dataset's sources read by its
type's reader (:mod:`defectflow.data.sources`), in order, then validated and written."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from defectflow.config import DatasetConfig, PreflightConfig
from defectflow.contracts import read_jsonl_models, validate_rows
from defectflow.data.preflight_report import unreadable_manifest_report, write_report
from defectflow.data.sources import REGISTRY, corrections
from defectflow.data.sources.mvtec import DEMO_DIR
from defectflow.errors import ManifestError
from defectflow.io import write_jsonl_atomic
from defectflow.records import ManifestRecord

log = logging.getLogger(__name__)


def ingest_sources(
    sources: list[Any],
    dataset: str,
    demo_dir: str | Path = DEMO_DIR,
    mask_dir: str | Path | None = None,
) -> list[ManifestRecord]:
    """All records of one dataset's sources, in source order. ``mask_dir``: where the masks
    drawn from COCO/YOLO objects are written (a folder a source)."""
    records: list[ManifestRecord] = []
    for i, src in enumerate(sources, start=1):
        kind = REGISTRY[src.type]
        if kind.read is None:
            n = corrections.apply(records, Path(src.path))
            log.info("dataset %s: source #%d (%s) -> %d records changed", dataset, i, src.type, n)
            continue
        if kind.draws_masks and mask_dir is None:
            raise ManifestError(f"source #{i} ({src.type}) needs a folder for its drawn masks")
        masks = Path(mask_dir) / f"source-{i}" if mask_dir is not None else None
        got = kind.read(src, mask_dir=masks, demo_dir=demo_dir)
        if not got:
            raise ManifestError(f"dataset {dataset!r} source #{i} ({src.type}) yielded no images")
        log.info("dataset %s: source #%d (%s) -> %d records", dataset, i, src.type, len(got))
        records.extend(got)
    return records


def write_manifest(records: list[ManifestRecord], out: str | Path) -> int:
    """Validate and write records as ``manifest.jsonl`` (atomic)."""
    rows = [r.model_dump(mode="json") for r in records]
    validate_rows("manifest_record", rows, where=str(out))
    return write_jsonl_atomic(out, rows)


def read_manifest(path: str | Path) -> list[ManifestRecord]:
    """Read ``manifest.jsonl``, validating each line against its schema."""

    return read_jsonl_models(path, "manifest_record", ManifestRecord)


def run_ingest(
    dataset_config: dict[str, Any] | DatasetConfig,
    dataset: str,
    out: str | Path,
    demo_dir: str | Path = DEMO_DIR,
    mask_dir: str | Path | None = None,
    report: str | Path | None = None,
) -> int:
    """Snakemake entry point: one dataset's config -> ``manifest.jsonl`` (and the box masks of
    detection sources under ``mask_dir``). A source that cannot be read is also written as a
    preflight report with its code to ``report`` (a log file: CI gates read the same JSON as
    from preflight)."""
    cfg = (
        dataset_config
        if isinstance(dataset_config, DatasetConfig)
        else DatasetConfig.model_validate(dataset_config)
    )
    if mask_dir is not None:
        Path(mask_dir).mkdir(parents=True, exist_ok=True)
    try:
        records = ingest_sources(cfg.sources, dataset, demo_dir, mask_dir)
    except ManifestError as exc:
        if report is not None:
            write_report(
                unreadable_manifest_report(exc, dataset, str(out), PreflightConfig()), report
            )
            raise ManifestError(f"{exc}\nReport: {report}", file=exc.file, line=exc.line) from None
        raise
    n = write_manifest(records, out)
    log.info("wrote %d records to %s", n, out)
    return n
