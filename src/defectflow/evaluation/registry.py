"""The run registry (``runs/registry.parquet``): every run's leaderboard rows with its config,
commit, versions and input hashes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from defectflow.errors import DefectflowError
from defectflow.io import atomic_path, sha256_file, write_json_atomic
from defectflow.tables import read_parquet

RUN_REGISTRY = "runs/registry.parquet"


def _git(root: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            != ""
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def _versions() -> dict[str, str]:
    out = {}
    for name in (
        "defectflow",
        "numpy",
        "onnxruntime",
        "snakemake",
        "torch",
        "timm",
        "anomalib",
        "scikit-learn",
        "fiftyone",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _sha(path: str | Path) -> str | None:
    return sha256_file(path) if Path(path).is_file() else None


def record_run(
    config: dict[str, Any],
    leaderboards: list[str],
    manifests: list[str],
    *,
    backbone_cards: list[str],
    registry: str | Path,
    out: str | Path,
    code_root: str | Path = ".",
) -> dict[str, Any]:
    """Append this run's leaderboard rows to the registry; write the run record to ``out``."""

    cfg_json = json.dumps(config, sort_keys=True, default=str)
    cfg_sha = hashlib.sha256(cfg_json.encode()).hexdigest()
    now = time.time()
    rows = [r for f in sorted(leaderboards) for r in read_parquet(f).to_pylist()]
    inputs = {f"manifest:{Path(m).parent.name}": _sha(m) for m in manifests}
    for c in backbone_cards:
        inputs[f"weights:{Path(c).parent.name}"] = json.loads(Path(c).read_text()).get(
            "weights_sha256"
        )
    run_id = (
        time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        + "-"
        + hashlib.sha256(f"{now}{cfg_sha}".encode()).hexdigest()[:6]
    )
    record = {
        "run_id": run_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "config_sha256": cfg_sha,
        "config": cfg_json,
        "code": _git(Path(code_root)),
        "versions": _versions(),
        "inputs": inputs,
        "n_rows": len(rows),
    }
    flat = [
        {
            "run_id": run_id,
            "time": record["time"],
            "config_sha256": cfg_sha,
            "config": cfg_json,
            "git_commit": record["code"]["commit"],
            "git_dirty": record["code"]["dirty"],
            "versions": json.dumps(record["versions"], sort_keys=True),
            "inputs": json.dumps(inputs, sort_keys=True),
            **r,
        }
        for r in rows
    ]
    registry = Path(registry)
    old = read_parquet(registry).to_pylist() if registry.exists() else []
    # columns of every run (a newer run may add some): missing values are null
    keys = list(dict.fromkeys(k for r in old + flat for k in r))
    with atomic_path(registry) as tmp:
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in old + flat]), tmp)
    write_json_atomic(out, record)
    return record


# -- reading it back ------------------------------------------------------------------------


def load_registry(registry: str | Path) -> list[dict[str, Any]]:
    if not Path(registry).exists():
        raise DefectflowError(f"no run registry at {registry}: run the workflow first")
    return read_parquet(registry).to_pylist()


def runs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per run, oldest first."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = seen.setdefault(
            r["run_id"],
            {
                "run_id": r["run_id"],
                "time": r["time"],
                "config_sha256": r["config_sha256"][:12],
                "git_commit": (r["git_commit"] or "")[:10],
                "git_dirty": r["git_dirty"],
                "rows": 0,
                "datasets": [],
                "mean_image_auroc": [],
            },
        )
        s["rows"] += 1
        if r["dataset"] not in s["datasets"]:
            s["datasets"].append(r["dataset"])
        if r.get("image_auroc") is not None:
            s["mean_image_auroc"].append(r["image_auroc"])
    out = list(seen.values())  # registry order: runs are appended
    for s in out:
        v = s["mean_image_auroc"]
        s["mean_image_auroc"] = round(sum(v) / len(v), 4) if v else None
    return out
