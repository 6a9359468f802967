"""Projected memory of each configured model per category, from the backbone's feature shape
and the model's own settings (``preflight_memory.json``). A rule of its own after preflight, so
changing a model's settings reruns this and the report, never the data stages."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from defectflow.artifacts.backbone import read_backbone_card
from defectflow.artifacts.embeddings import shard_name, shard_shapes, write_shard
from defectflow.artifacts.standardized import write_standardized
from defectflow.codes import CODES
from defectflow.contracts import write_json_artifact
from defectflow.data.preflight_report import Issue, read_report
from defectflow.models.backends import entry
from defectflow.records import Severity

log = logging.getLogger(__name__)


class MemoryReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    dataset: str
    patch_shapes: dict[str, list[int]] = Field(
        description="backbone id -> [C, H, W] of its patch features"
    )
    fit_images: dict[str, int] = Field(
        description="category -> normal train images (val is held out)"
    )
    models: dict[str, dict[str, dict[str, float]]] = Field(
        description="category -> model -> candidates_mb (features held while fitting), model_mb"
    )
    issues: list[Issue]


def model_memory_mb(
    params: dict[str, Any], n_train: int, patch_shape: list[int], embedding_dim: int
) -> dict[str, float]:
    """Projected memory (MB) of fitting a model on ``n_train`` images (its backend's estimate)."""

    p = entry(params["backend"]).params.model_validate(params)
    return p.memory_mb(n_train, patch_shape, embedding_dim)


def train_mem_mb(
    params: dict[str, Any],
    feature_files: list[str],
    fallback: int,
    base_mb: int = 400,
    margin: float = 1.15,
) -> int:
    """The ``mem_mb`` a train job declares: the stored features it loads (float16 patches as
    stored, unless its backend reads image embeddings only), plus the larger of one shard read
    while loading and what its backend holds while fitting and cross-fitting
    (:meth:`~defectflow.models.backends.params.BackendParams.fit_mb`), plus the interpreter with its
    libraries, and a margin; rounded up to 250 MB (``bench/train_memory.py`` measures it).

    ``fallback`` while the features do not exist yet (a dry run before embedding; Snakemake
    evaluates resources again when the job is ready to run, its inputs present) and for
    backends that read images."""

    e = entry(params["backend"])
    if e.members:  # loads its members' checkpoints and scores, no features
        fit = e.params.model_validate(params).fit_mb(0, [0, 0, 0], 0) or 0.0
        return int(-(-((base_mb + fit) * margin) // 250) * 250)
    if e.consumes != "features" or not feature_files or not all(map(os.path.exists, feature_files)):
        return fallback

    n = biggest = 0
    for f in feature_files:
        shape, dim = shard_shapes(f)
        n += shape[0]
        biggest = max(biggest, shape[0])
    fit = e.params.model_validate(params).fit_mb(n, shape[1:], dim)
    if fit is None:
        return fallback
    per_image = dim * 4 + (2 * shape[1] * shape[2] * shape[3] if e.patches else 0)
    shard = biggest * per_image / 2**20  # one shard read, copied into the loaded features
    mb = (base_mb + n * per_image / 2**20 + max(shard, fit)) * margin
    return int(-(-mb // 250) * 250)


_TRAIN_CHILD = """
import json, sys
from pathlib import Path
from defectflow.models.train import run_train
a = json.loads(sys.argv[1])
run_train(a["table"], a["files"], "d", category="cat", model=a["model"], params=a["params"], folds=5,
          out_ckpt=a["out"] + "/c.safetensors", out_card=a["out"] + "/card.json",
          out_crossfit=a["out"] + "/crossfit.parquet", seed=0, threads=a["threads"])
# VmHWM: this process's own peak RSS (ru_maxrss would count the parent's size at the fork)
print("PEAK_KB", [x.split()[1] for x in Path("/proc/self/status").read_text().splitlines()
                  if x.startswith("VmHWM")][0])
"""


def synthetic_train_data(
    root: str | Path,
    n: int,
    shard_size: int,
    *,
    patch_shape: tuple[int, int, int] = (152, 28, 28),
    dim: int = 472,
    seed: int = 0,
    prototypes: Any = None,
) -> tuple[Path, list[str]]:
    """A standardized table of ``n`` normal images of category ``cat`` (every tenth held out
    as val) and their synthetic stored features in shards: what a train job reads, for
    measuring one (``bench/train_memory.py``, ``bench/scale.py`` and a test). Returns (table,
    shard files).

    Features are one random base plus noise, or, with ``prototypes`` (real ``[K, C, H, W]``
    patch features), a random prototype shifted by up to two positions plus a little noise:
    the structure of a production line's near-identical parts."""

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = [
        {
            "image_id": f"cat-{i:06d}",
            "category": "cat",
            "split": "val" if i % 10 == 9 else "train",
            "split_assigned": False,
            "label": "normal",
            "defect_type": None,
            "image_path": f"/synthetic/{i}.png",
            "mask_path": None,
            "rel_path": f"{i}.png",
            "sha256": f"{i:064x}",
            "width": 224,
            "height": 224,
            "channels": 3,
            "mode": "RGB",
            "bit_depth": 8,
            "mask_fraction": None,
            "group_id": None,
            "source_file": "synthetic",
            "source_line": i + 1,
            "source_type": "manifest",
        }
        for i in range(n)
    ]
    table = root / "standardized.parquet"
    write_standardized(table, rows)
    base = rng.standard_normal(patch_shape, dtype=np.float32)
    k = -(-n // shard_size)
    files = []
    for s in range(k):
        part = rows[s * shard_size : (s + 1) * shard_size]
        if prototypes is None:
            patch = base + 0.3 * rng.standard_normal((len(part), *patch_shape), dtype=np.float32)
        else:
            protos = np.asarray(prototypes, np.float32)
            scale = 0.05 * float(protos.std())
            patch = np.empty((len(part), *patch_shape), np.float32)
            for i in range(len(part)):
                shift = tuple(int(v) for v in rng.integers(-2, 3, 2))
                patch[i] = np.roll(protos[rng.integers(len(protos))], shift, axis=(1, 2))
                patch[i] += scale * rng.standard_normal(patch_shape, dtype=np.float32)
        f = root / f"{shard_name(s, k)}.safetensors"
        write_shard(
            patch,
            rng.standard_normal((len(part), dim), dtype=np.float32),
            part,
            {},
            f,
            f.with_suffix(".parquet"),
        )
        files.append(str(f))
    return table, files


def measure_train(
    table: str | Path, files: list[str], params: dict[str, Any], out: str | Path, threads: int = 1
) -> float:
    """Run a real train job (category ``cat``) in a child process; its peak RSS in MB."""

    arg = json.dumps(
        {
            "table": str(table),
            "files": files,
            "model": params["backend"],
            "params": params,
            "out": str(out),
            "threads": threads,
        }
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, arg], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"train failed:\n{r.stderr[-3000:]}")
    return int(r.stdout.split("PEAK_KB")[1].split()[0]) / 1024


def run_memory_check(
    preflight: str | Path,
    backbone_cards: list[str | Path],
    models: dict[str, Any],
    *,
    dataset: str,
    max_memory_mb: int,
    out: str | Path,
    default_backbone: str,
    severity: dict[str, str] | None = None,
) -> MemoryReport:
    """Snakemake entry point. ``backbone_cards``: ``backbones/{id}/backbone.json`` of every
    backbone; each model is projected with its own (``backbone_variant``, else the default)."""
    report = read_report(preflight)
    cards = {Path(c).parent.name: read_backbone_card(c) for c in backbone_cards}
    sev = severity or {}
    fit = {
        cat: sum(
            n
            for sp, labels in s.counts.items()
            if sp in ("train", "unassigned")
            for lab, n in labels.items()
            if lab in ("normal", "unlabeled")
        )
        for cat, s in report.categories.items()
    }
    out_models: dict[str, dict[str, dict[str, float]]] = {}
    issues = []
    for cat, n in sorted(fit.items()):
        out_models[cat] = {}
        for name, params in sorted(models.items()):
            card = cards[params.get("backbone_variant") or default_backbone]
            mb = model_memory_mb(params, n, card.patch_shape, card.embedding_dim)
            if not mb:
                continue
            out_models[cat][name] = mb
            issues.append(
                Issue(
                    code="MEMORY_PROJECTION",
                    severity=Severity(sev.get("MEMORY_PROJECTION", CODES["MEMORY_PROJECTION"][0])),
                    message=f"category {cat!r}, model {name!r}: fitting holds about {mb['candidates_mb']:.0f} MB of features, "
                    f"the fitted model {mb['model_mb']:.0f} MB",
                    context={"category": cat, "model": name, **mb},
                )
            )
            if max(mb.values()) > max_memory_mb:
                issues.append(
                    Issue(
                        code="MEMORY_HIGH",
                        severity=Severity(sev.get("MEMORY_HIGH", CODES["MEMORY_HIGH"][0])),
                        message=f"category {cat!r}, model {name!r}: needs about {max(mb.values()):.0f} MB "
                        f"(> preflight.max_memory_mb {max_memory_mb})",
                        context={"category": cat, "model": name},
                    )
                )
    rep = MemoryReport(
        dataset=dataset,
        patch_shapes={b: c.patch_shape for b, c in sorted(cards.items())},
        fit_images=fit,
        models=out_models,
        issues=issues,
    )
    write_json_artifact("memory_report", rep, out)
    for i in issues:
        (log.warning if i.severity != Severity.INFO else log.info)("%s: %s", i.code, i.message)
    return rep
