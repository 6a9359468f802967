"""Comparing runs: the leaderboard of a dataset, the run registry, diffs between runs and the
regression gate.

- ``results/{dataset}/leaderboard.parquet`` and ``.csv``: one row per category x model with image
  AUROC/AUPR, F1 at the delivered threshold, the best F1 possible, pixel AUROC/AUPRO, fit and
  score seconds, peak memory (from Snakemake's benchmark files) and model size.
- ``runs/registry.parquet``: one row per leaderboard row per run, with the run's id, time, config
  (resolved, and its sha256), code version (git commit, dirty flag), library versions and input
  fingerprints (manifests, backbone weights). Appended by the ``register_run`` rule whenever a
  leaderboard changed.
- ``defectflow runs list|show|diff`` and ``defectflow gate --baseline RUN_OR_FILE``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from defectflow.errors import DefectflowError
from defectflow.io import atomic_path, write_json_atomic

REGISTRY = "runs/registry.parquet"
METRICS = ("image_auroc", "image_aupr", "f1", "best_f1", "f1_gap", "pixel_auroc", "pixel_aupro")
COLUMNS = (
    "dataset",
    "category",
    "model",
    "variant_of",
    "seed",
    "backend",
    "backbone",
    "threshold",
    "threshold_policy",
    *METRICS,
    "fit_s",
    "score_s",
    "peak_mb",
    "model_mb",
    "auroc_mean_over_seeds",
    "auroc_std_over_seeds",
    "n_seeds",
    "best_on_test",
    "picked_without_test_labels",
    "selection_signal",
)


def _bench(path: Path) -> dict[str, float]:
    """Seconds and peak RSS (MB) of a job from its Snakemake benchmark file (empty if absent)."""
    try:
        head, row = path.read_text().splitlines()[:2]
    except (OSError, ValueError):
        return {}
    rec = dict(zip(head.split("\t"), row.split("\t"), strict=False))
    out = {}
    for key in ("s", "max_rss"):
        with contextlib.suppress(KeyError, ValueError):
            out[key] = float(rec[key])
    return out


def leaderboard_rows(
    metrics_files: list[str], benchmarks: str | Path = "benchmarks"
) -> list[dict[str, Any]]:
    from defectflow.artifacts.checkpoint import checkpoint_meta
    from defectflow.artifacts.metrics import read_metrics

    rows = []
    for f in sorted(metrics_files):
        m = read_metrics(f)
        folder = Path(f).parent
        bdir = Path(benchmarks) / m.dataset
        fit = _bench(bdir / "train" / f"{m.model}-{m.category}.tsv")
        scores = [
            _bench(p) for p in sorted((bdir / "score").glob(f"{m.model}-{m.category}-*-of-*.tsv"))
        ]
        ckpt = folder / "checkpoint.safetensors"
        params = checkpoint_meta(ckpt)["params"] if ckpt.exists() else {}
        backend = params.get("backend")
        signal, backbone = _signal_and_backbone(folder / "infer_config.json")
        peak = [b["max_rss"] for b in [fit, *scores] if "max_rss" in b]
        rows.append(
            {
                "dataset": m.dataset,
                "category": m.category,
                "model": m.model,
                "backend": backend,
                "variant_of": params.get("variant_of") or m.model,
                "seed": params.get("seed"),
                "selection_signal": signal,
                "backbone": backbone,
                "threshold": m.image.threshold,
                "threshold_policy": m.image.threshold_policy,
                "image_auroc": m.image.auroc,
                "image_aupr": m.image.aupr,
                "f1": m.image.f1,
                "best_f1": m.image.best_f1,
                "f1_gap": m.image.f1_gap,
                "pixel_auroc": m.pixel.auroc,
                "pixel_aupro": m.pixel.aupro,
                "fit_s": fit.get("s"),
                "score_s": sum(b["s"] for b in scores if "s" in b) if scores else None,
                "peak_mb": max(peak) if peak else None,
                "model_mb": round(ckpt.stat().st_size / 2**20, 3) if ckpt.exists() else None,
            }
        )
    rows = sorted(rows, key=lambda r: (r["dataset"], r["category"], r["model"]))
    _mark(rows)
    return rows


def _signal_and_backbone(infer_config: Path) -> tuple[float | None, str | None]:
    """What a choice that never looks at test labels ranks variants by (higher is better): the
    F1 on validation anomalies and cross-fit normals when there are validation anomalies; else
    minus the relative spread of the cross-fit normal scores, (p95 - median) / |median| (a model
    whose unseen normals score consistently; a heuristic, documented as such). With it, the id
    of the backbone the model runs on (its folder under ``results/backbones``; None for a model
    with its own network)."""
    from defectflow.artifacts.infer_config import read_infer_config

    if not infer_config.exists():
        return None, None
    ic = read_infer_config(infer_config, verify=False)
    backbone = Path(ic.backbone.path).parent.name if ic.backbone else None
    t = ic.threshold
    if t.n_anomaly and t.f1 is not None:
        return round(float(t.f1), 6), backbone
    s = t.normal_scores
    if not s or not s.get("median"):
        return None, backbone
    return round(-(s["p95"] - s["median"]) / abs(s["median"]), 6), backbone


def _mark(rows: list[dict[str, Any]]) -> None:
    """Per category: the best variant on the test split, the one the label-free signal picks,
    and each variant's AUROC mean and spread over its seeds."""
    import re
    import statistics

    for cat in {(r["dataset"], r["category"]) for r in rows}:
        cat_rows = [r for r in rows if (r["dataset"], r["category"]) == cat]
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in cat_rows:
            groups.setdefault(re.sub(r"-s\d+$", "", r["model"]), []).append(r)
        for members in groups.values():
            vals = [r["image_auroc"] for r in members if r["image_auroc"] is not None]
            for r in members:
                r["n_seeds"] = float(len(members))
                r["auroc_mean_over_seeds"] = round(statistics.fmean(vals), 6) if vals else None
                r["auroc_std_over_seeds"] = (
                    round(statistics.pstdev(vals), 6) if len(vals) > 1 else 0.0
                )
        scored = [r for r in cat_rows if r["image_auroc"] is not None]
        best = max(scored, key=lambda r: r["image_auroc"], default=None)
        signalled = [r for r in cat_rows if r["selection_signal"] is not None]
        picked = max(signalled, key=lambda r: r["selection_signal"], default=None)
        for r in cat_rows:
            r["best_on_test"] = r is best
            r["picked_without_test_labels"] = r is picked


def write_leaderboard(
    rows: list[dict[str, Any]], out_parquet: str | Path, out_csv: str | Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=_schema())
    with atomic_path(out_parquet) as tmp:
        pq.write_table(table, tmp)
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows({c: r.get(c) for c in COLUMNS} for r in rows)


def _schema():
    import pyarrow as pa

    text = {"dataset", "category", "model", "variant_of", "backend", "backbone", "threshold_policy"}
    flags = {"best_on_test", "picked_without_test_labels"}
    return pa.schema(
        [
            (c, pa.string() if c in text else pa.bool_() if c in flags else pa.float64())
            for c in COLUMNS
        ]
    )


def run_leaderboard(
    metrics_files: list[str],
    out_parquet: str | Path,
    out_csv: str | Path,
    benchmarks: str | Path = "benchmarks",
) -> list[dict[str, Any]]:
    """Snakemake entry point."""
    rows = leaderboard_rows(metrics_files, benchmarks)
    write_leaderboard(rows, out_parquet, out_csv)
    return rows


# -- the registry ---------------------------------------------------------------------------


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
    from importlib.metadata import PackageNotFoundError, version

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
    from defectflow.io import sha256_file

    return sha256_file(path) if Path(path).is_file() else None


def record_run(
    config: dict[str, Any],
    leaderboards: list[str],
    manifests: list[str],
    backbone_cards: list[str],
    registry: str | Path,
    out: str | Path,
    code_root: str | Path = ".",
) -> dict[str, Any]:
    """Append this run's leaderboard rows to the registry; write the run record to ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from defectflow.tables import read_parquet

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
    from defectflow.tables import read_parquet

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
                "mean_image_auroc": [],
            },
        )
        s["rows"] += 1
        if r.get("image_auroc") is not None:
            s["mean_image_auroc"].append(r["image_auroc"])
    out = list(seen.values())  # registry order: runs are appended
    for s in out:
        v = s["mean_image_auroc"]
        s["mean_image_auroc"] = round(sum(v) / len(v), 4) if v else None
    return out


def _pick(rows: list[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    ids = [s["run_id"] for s in runs_of(rows)]
    if run == "latest" and ids:
        run = ids[-1]
    if run == "previous" and len(ids) > 1:
        run = ids[-2]
    match = [i for i in ids if i == run or i.startswith(run)]
    if len(match) != 1:
        raise DefectflowError(
            f"run {run!r} {'is ambiguous' if match else 'is not in the registry'}; "
            f"known: {', '.join(ids[-5:]) or 'none'}"
        )
    return [r for r in rows if r["run_id"] == match[0]]


def baseline_rows(baseline: str, registry: str | Path) -> list[dict[str, Any]]:
    """A run id (or prefix, or latest/previous) in the registry, or a leaderboard file."""
    path = Path(baseline)
    if path.suffix in (".parquet", ".csv") and path.is_file():
        if path.suffix == ".csv":
            with open(path, newline="") as fh:
                return [
                    {
                        k: (float(v) if k in METRICS and v not in ("", None) else (v or None))
                        for k, v in row.items()
                    }
                    for row in csv.DictReader(fh)
                ]
        from defectflow.tables import read_parquet

        return read_parquet(path).to_pylist()
    return _pick(load_registry(registry), baseline)


def _key(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r["dataset"], r["category"], r["model"])


def diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Config differences and metric deltas (b - a) per dataset x category x model."""

    def cfg(rows):
        return json.loads(rows[0]["config"]) if rows and rows[0].get("config") else {}

    def flat(d, prefix=""):
        out = {}
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    ca, cb = flat(cfg(a)), flat(cfg(b))
    changes = {
        k: [ca.get(k), cb.get(k)] for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)
    }
    ia, ib = {_key(r): r for r in a}, {_key(r): r for r in b}
    deltas = []
    for k in sorted(set(ia) | set(ib)):
        ra, rb = ia.get(k), ib.get(k)
        d = {
            "dataset": k[0],
            "category": k[1],
            "model": k[2],
            "only_in": None if ra and rb else ("a" if ra else "b"),
        }
        for m in METRICS:
            va, vb = (ra or {}).get(m), (rb or {}).get(m)
            d[m] = {
                "a": va,
                "b": vb,
                "delta": None if va is None or vb is None else round(vb - va, 6),
            }
        deltas.append(d)
    return {"config_changes": changes, "metrics": deltas}


def gate(
    current: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    metric: str = "image_auroc",
    max_drop: float = 0.01,
) -> list[dict[str, Any]]:
    """The rows whose ``metric`` dropped by more than ``max_drop`` against the baseline (a row
    missing from the current run counts as a drop)."""
    higher_is_better = [m for m in METRICS if m != "f1_gap"]
    if metric not in higher_is_better:
        raise DefectflowError(
            f"metric {metric!r} cannot gate; one of {', '.join(higher_is_better)}"
        )
    cur = {_key(r): r for r in current}
    failed = []
    for r in baseline:
        base = r.get(metric)
        if base is None:
            continue
        now = cur.get(_key(r), {}).get(metric)
        if now is None or base - now > max_drop + 1e-12:
            failed.append(
                {
                    "dataset": r["dataset"],
                    "category": r["category"],
                    "model": r["model"],
                    "baseline": base,
                    "current": now,
                    "drop": None if now is None else round(base - now, 6),
                }
            )
    return failed
