"""The Snakemake workflow: dry-run DAG checks and end-to-end runs in a temporary copy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import save_image, write_jsonl

SMALL_DEMO = {"n_train": 12, "n_test_normal": 4, "n_test_per_defect": 2, "image_size": 64}


def snakemake(wf: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=wf,
        capture_output=True,
        text=True,
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        )
    return r


def write_config(wf: Path, **updates) -> None:
    path = wf / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(updates)
    path.write_text(yaml.safe_dump(cfg))


def summary(wf: Path) -> dict[str, str]:
    out = snakemake(wf, "--summary").stdout
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    return {r[0]: r[2] for r in rows[1:]}


def dag_edges(wf: Path) -> set[tuple[str, str]]:
    dot = snakemake(wf, "--dag").stdout
    names = {
        m[0]: m[1].split("\\n")[0] for m in re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.M)
    }
    return {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}


def test_dry_run_dag_of_default_config(workflow_dir):
    assert summary(workflow_dir) == {
        "resources/demo": "demo_data",
        "results/demo/manifest.jsonl": "ingest",
        "results/demo/preflight.json": "preflight",
        "results/demo/image_facts.parquet": "preflight",
        "results/demo/standardized.parquet": "standardize",
    }
    assert dag_edges(workflow_dir) == {
        ("demo_data", "ingest"), ("ingest", "preflight"), ("ingest", "standardize"),
        ("preflight", "standardize"), ("standardize", "all"),
    }  # fmt: skip
    r = snakemake(workflow_dir, "-n")
    assert "demo_data" in r.stdout and "standardize" in r.stdout


def test_dry_run_with_user_datasets(workflow_dir, mvtec_tree, tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "category": "c"}])
    write_config(workflow_dir, datasets={
        "demo": {"enabled": False, "sources": [{"type": "demo"}]},
        "parts": {"sources": [{"type": "mvtec", "path": str(mvtec_tree)}, {"type": "manifest", "path": str(m)}]},
        "line2": {"sources": [{"type": "folder", "path": str(mvtec_tree / "test")}]},
    })  # fmt: skip
    s = summary(workflow_dir)
    assert "resources/demo" not in s and not any(k.startswith("results/demo/") for k in s)
    assert (
        s["results/parts/manifest.jsonl"] == "ingest"
        and s["results/line2/standardized.parquet"] == "standardize"
    )


def test_config_error_stops_before_any_job(workflow_dir):
    r = snakemake(workflow_dir, "-n", "--config", "preflight={'verify': 'quick'}", check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "preflight.verify" in out and "'header' or 'full'" in out


def test_end_to_end_demo_then_nothing_to_do(workflow_dir):
    write_config(workflow_dir, demo=SMALL_DEMO)
    snakemake(workflow_dir)
    res = workflow_dir / "results" / "demo"
    report = json.loads((res / "preflight.json").read_text())
    assert report["ok"] and set(report["categories"]) == {"tile", "bracket"}
    table = pq.read_table(res / "standardized.parquet").to_pylist()
    assert len(table) == 2 * (12 + 4 + 6)
    assert {r["split"] for r in table} == {"train", "val", "test"}
    assert sum(r["label"] == "anomaly" for r in table) == 12 and all(
        r["split"] == "test" for r in table if r["label"] == "anomaly"
    )
    r = subprocess.run([sys.executable, "-m", "defectflow.cli", "validate", str(res / "manifest.jsonl"), str(res / "preflight.json"),
                        str(res / "standardized.parquet"), str(res / "image_facts.parquet")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout
    assert (workflow_dir / "logs" / "demo" / "preflight.log").read_text().count("preflight OK") == 1
    again = snakemake(workflow_dir)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_preflight_error_fails_the_run_with_a_readable_summary(workflow_dir, tmp_path):
    rows = [
        {"image": str(save_image(tmp_path / f"{i}.png", i)), "category": "c", "split": "train"}
        for i in range(3)
    ]
    rows.append(
        {"image": str(tmp_path / "gone.png"), "category": "c", "split": "test", "label": "anomaly"}
    )
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    write_config(
        workflow_dir,
        datasets={
            "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            "bad": {"sources": [{"type": "manifest", "path": str(m)}]},
        },
    )
    r = snakemake(workflow_dir, check=False)
    assert r.returncode != 0
    assert "IMAGE_MISSING" in r.stderr and "gone.png" in r.stderr
    assert "Traceback" not in (workflow_dir / "logs" / "bad" / "preflight.log").read_text()
    assert not (workflow_dir / "results" / "bad" / "preflight.json").exists()
    assert not (workflow_dir / "results" / "bad" / "standardized.parquet").exists()
    kept = json.loads((workflow_dir / "logs" / "bad" / "preflight_report.json").read_text())
    assert kept["ok"] is False and kept["issues"][0]["context"]["line"] == 4


@pytest.mark.slow
def test_battery_weld_jsonl_through_standardize(workflow_dir, battery_weld):
    write_config(
        workflow_dir,
        datasets={
            "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            "weld": {"sources": [
                {"type": "manifest", "path": str(battery_weld / "train_welding.json"), "split": "train"},
                {"type": "manifest", "path": str(battery_weld / "test_welding.json"), "split": "test"},
            ]},
        },
        preflight={"severity": {"LEAKAGE_EXACT": "warning"}},
    )  # fmt: skip
    snakemake(workflow_dir)
    rows = pq.read_table(workflow_dir / "results" / "weld" / "standardized.parquet").to_pylist()
    test_normal = [r for r in rows if r["split"] == "test" and r["label"] == "normal"]
    assert len(test_normal) == 35 - 7  # the 7 byte-identical copies of training images are dropped
    assert sum(r["label"] == "anomaly" for r in rows) == 93
    fit = [r for r in rows if r["split"] in ("train", "val")]
    assert len(fit) == 36  # 37 train images, one byte-identical pair kept once
    assert all(r["channels"] == 1 and r["mode"] == "L" for r in rows)
    assert all(0 < r["mask_fraction"] < 1 for r in rows if r["label"] == "anomaly")
