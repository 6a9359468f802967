"""What `defectflow infer` is given: image files, folders (recursive) and manifests."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from defectflow.errors import DefectflowError
from defectflow.manifests import IMAGE_EXTENSIONS, image_rows

log = logging.getLogger(__name__)
MANIFEST_SUFFIXES = {".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet", ".pq"}


def gather_images(inputs: list[Path], category: str | None) -> list[dict]:
    """Image items from files, folders (recursive) and manifests (JSONL/CSV/Parquet; rows of
    another category are left out).

    Each image's id is its path relative to the common folder of every input (``good/000.png``,
    ``scratch/000.png``), so ids are unique and stable for any set of inputs; the same file given
    twice is scored once.
    """
    found: list[dict] = []
    other: dict[str, int] = {}  # manifest rows of another category, by category
    for p in inputs:
        if p.is_dir():
            every = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")]
            files = sorted(f for f in every if f.suffix.lower() in IMAGE_EXTENSIONS)
            skipped = sorted({f.suffix.lower() or "(none)" for f in every} - IMAGE_EXTENSIONS)
            if skipped:
                log.warning(
                    "%s: %d files that are not images skipped (%s)",
                    p,
                    len(every) - len(files),
                    ", ".join(skipped),
                )
            if not files:
                log.warning("%s holds no image files (%s)", p, ", ".join(sorted(IMAGE_EXTENSIONS)))
            found += [{"image_path": f} for f in files]
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            for r in image_rows(p):
                if category is not None and r["category"] not in (None, "", category):
                    other[str(r["category"])] = other.get(str(r["category"]), 0) + 1
                if category is None or r["category"] in (None, "", category):
                    label = r["label"] if r["label"] in ("normal", "anomaly") else None
                    found.append(
                        {
                            "image_path": Path(r["image_path"]),
                            "gt_label": label,
                            "defect_type": r["defect_type"],
                        }
                    )
        else:
            found.append({"image_path": p})  # a missing or unreadable file becomes an error record
    if other:
        log.warning(
            "%d manifest rows of other categories left out (%s); this model is %r's",
            sum(other.values()),
            ", ".join(f"{c}: {n}" for c, n in sorted(other.items())),
            category,
        )
    if not found and other:
        raise DefectflowError(
            f"no image of category {category!r} in {[str(i) for i in inputs]}: its rows are of "
            f"{', '.join(sorted(other))}; use that category's infer_config.json"
        )
    if not found:
        raise DefectflowError(f"no images found in {[str(i) for i in inputs]}")
    absolute = [os.path.abspath(it["image_path"]) for it in found]
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    items, seen = [], set()
    for it, a in zip(found, absolute, strict=True):
        if a in seen:
            continue
        seen.add(a)
        items.append(
            dict(
                it,
                image_path=str(it["image_path"]),
                image_id=Path(os.path.relpath(a, root)).as_posix(),
            )
        )
    return items
