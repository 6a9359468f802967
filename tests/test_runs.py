"""Leaderboard, run registry, diff and the regression gate, on constructed metrics and runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from defectflow.artifacts.metrics import Metrics, write_metrics
from defectflow.errors import DefectflowError
from defectflow.evaluation.gate import diff, gate
from defectflow.evaluation.leaderboard import run_leaderboard
from defectflow.evaluation.registry import record_run, runs_of

CLI = [sys.executable, "-m", "defectflow.cli"]


def _metrics(
    root: Path, category: str, model: str, auroc: float, f1: float = 0.8, dataset: str = "d"
) -> str:
    m = Metrics(
        dataset=dataset,
        category=category,
        model=model,
        model_id=f"{dataset}/{category}/{model}@x",
        n_images=10,
        n_errors=0,
        per_defect_type={},
        image={
            "status": "ok",
            "n_normal": 5,
            "n_anomaly": 5,
            "auroc": auroc,
            "aupr": auroc - 0.01,
            "f1": f1,
            "best_f1": 0.9,
            "f1_gap": round(0.9 - f1, 6),
            "threshold": 1.5,
            "threshold_policy": "normal_quantile",
        },
        pixel={"status": "ok", "auroc": 0.95, "aupro": 0.8},
    )
    path = root / "results" / dataset / "models" / model / category / "metrics.json"
    write_metrics(m, path)
    return str(path)


def _board(root: Path, aurocs: dict[tuple[str, str], float], dataset: str = "d") -> Path:
    files = [_metrics(root, c, m, a, dataset=dataset) for (c, m), a in aurocs.items()]
    bench = root / "benchmarks/d/train"
    bench.mkdir(parents=True, exist_ok=True)
    (bench / "knn-a.tsv").write_text("s\th:m:s\tmax_rss\n2.50\t0:00:02\t300.5\n")
    out = root / "results" / dataset / "leaderboard.parquet"
    run_leaderboard(files, out, out.with_suffix(".csv"), benchmarks=root / "benchmarks")
    return out


def test_leaderboard_rows_come_from_the_metrics(tmp_path):
    board = _board(tmp_path, {("a", "knn"): 0.91, ("a", "patchcore"): 0.97, ("b", "knn"): 0.88})
    rows = pq.read_table(board).to_pylist()
    assert [(r["category"], r["model"], r["image_auroc"]) for r in rows] == [
        ("a", "knn", 0.91),
        ("a", "patchcore", 0.97),
        ("b", "knn", 0.88),
    ]
    knn_a = rows[0]
    assert knn_a["fit_s"] == 2.5 and knn_a["peak_mb"] == 300.5 and knn_a["best_f1"] == 0.9
    assert rows[1]["fit_s"] is None  # no benchmark file: unknown, not zero
    csv = board.with_suffix(".csv").read_text().splitlines()
    assert csv[0].startswith("dataset,category,model") and len(csv) == 4


def test_registry_diff_and_gate_across_two_runs(tmp_path):
    reg = tmp_path / "runs/registry.parquet"
    b1 = _board(tmp_path / "r1", {("a", "knn"): 0.91, ("a", "patchcore"): 0.97})
    record_run(
        {"models": {"patchcore": {"coreset_ratio": 0.1}}},
        [str(b1)],
        [],
        backbone_cards=[],
        registry=reg,
        out=tmp_path / "r1.json",
    )
    b2 = _board(tmp_path / "r2", {("a", "knn"): 0.915, ("a", "patchcore"): 0.90})
    rec = record_run(
        {"models": {"patchcore": {"coreset_ratio": 0.01}}},
        [str(b2)],
        [],
        backbone_cards=[],
        registry=reg,
        out=tmp_path / "r2.json",
    )
    rows = pq.read_table(reg).to_pylist()
    runs = runs_of(rows)
    assert len(runs) == 2 and runs[-1]["run_id"] == rec["run_id"] and rec["config_sha256"]
    a = [r for r in rows if r["run_id"] == runs[0]["run_id"]]
    b = [r for r in rows if r["run_id"] == runs[1]["run_id"]]
    d = diff(a, b)
    assert d["config_changes"] == {"models.patchcore.coreset_ratio": [0.1, 0.01]}
    pc = next(m for m in d["metrics"] if m["model"] == "patchcore")
    assert pc["image_auroc"]["delta"] == pytest.approx(-0.07)
    # the gate: patchcore dropped 0.07 > 0.01 fails; knn rose; a 0.1 tolerance passes
    assert [f["model"] for f in gate(b, a, "image_auroc", 0.01)] == ["patchcore"]
    assert gate(b, a, "image_auroc", 0.1) == []
    assert [f["current"] for f in gate(b[:1], a, "image_auroc", 0.5)] == [
        None
    ]  # a missing result fails
    with pytest.raises(DefectflowError, match="cannot gate"):
        gate(b, a, "f1_gap")
    # the same through the command line, as a CI step would run it
    fail = subprocess.run(
        [*CLI, "gate", "--baseline", "previous", "--registry", str(reg)],
        capture_output=True,
        text=True,
    )
    assert fail.returncode == 1 and "a/patchcore: 0.9700 -> 0.9000 (-0.0700)" in fail.stdout
    ok = subprocess.run(
        [*CLI, "gate", "--baseline", "previous", "--max-drop", "0.1", "--registry", str(reg)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "gate passed" in ok.stdout
    from_file = subprocess.run(
        [*CLI, "gate", "--baseline", str(b1.with_suffix(".csv")), "--registry", str(reg), "--json"],
        capture_output=True,
        text=True,
    )
    assert (
        from_file.returncode == 1
        and json.loads(from_file.stdout)["failed"][0]["model"] == "patchcore"
    )
    listed = subprocess.run(
        [*CLI, "runs", "list", "--registry", str(reg)], capture_output=True, text=True
    )
    assert listed.returncode == 0 and rec["run_id"] in listed.stdout
    shown = subprocess.run(
        [*CLI, "runs", "diff", "previous", "latest", "--registry", str(reg)],
        capture_output=True,
        text=True,
    )
    assert (
        "models.patchcore.coreset_ratio: 0.1 -> 0.01" in shown.stdout
        and "(-0.0700)" in shown.stdout
    )
    missing = subprocess.run(
        [*CLI, "runs", "show", "nope", "--registry", str(reg)], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "is not in the registry" in missing.stderr
    # a run of another dataset in between: `previous` is the previous run of the same dataset
    b3 = _board(tmp_path / "r3", {("x", "knn"): 0.5}, dataset="other")
    record_run({}, [str(b3)], [], backbone_cards=[], registry=reg, out=tmp_path / "r3.json")
    again = subprocess.run(
        [
            *CLI,
            "gate",
            "--current",
            rec["run_id"],
            "--baseline",
            "previous",
            "--registry",
            str(reg),
        ],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "a/patchcore: 0.9700 -> 0.9000" in again.stdout
    assert "(datasets: d)" in again.stdout
    listed = subprocess.run(
        [*CLI, "runs", "list", "--registry", str(reg)], capture_output=True, text=True
    )
    assert listed.stdout.splitlines()[-1].endswith("other")  # each run says its datasets


def test_leaderboard_marks_best_and_seed_spread(tmp_path):
    board = _board(tmp_path, {("a", "pc-s0"): 0.90, ("a", "pc-s1"): 0.94, ("a", "knn"): 0.92})
    rows = {r["model"]: r for r in pq.read_table(board).to_pylist()}
    assert rows["pc-s1"]["best_on_test"] and not rows["knn"]["best_on_test"]
    assert rows["pc-s0"]["n_seeds"] == 2 and rows["pc-s0"][
        "auroc_mean_over_seeds"
    ] == pytest.approx(0.92)
    assert rows["pc-s0"]["auroc_std_over_seeds"] == pytest.approx(0.02)
    assert rows["knn"]["n_seeds"] == 1 and rows["knn"]["auroc_std_over_seeds"] == 0.0
