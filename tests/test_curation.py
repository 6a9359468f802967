"""The curation loop for real: a FiftyOne dataset built by `snakemake fiftyone` from a pipeline
run (reloaded in a fresh process), the FiftyOne App serving it over HTTP on 127.0.0.1, and
similarity search over the stored embeddings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow
SMALL = {
    "demo": {"categories": ["bracket"], "n_train": 20, "n_test_normal": 4, "n_test_per_defect": 2},
    "threshold": {"folds": 3},
    "preflight": {"near_duplicate_distance": 64},  # flags look-alikes, so samples get tags
}
DEFECTFLOW = [sys.executable, "-m", "defectflow.cli"]


DECOY = """
import sys, time
import fiftyone as fo
if not fo.dataset_exists("demo"):  # never deletes a dataset of a service it may share
    ds = fo.Dataset("demo", persistent=True)
    ds.add_sample(fo.Sample(filepath="/decoy.png"))
print("ready", flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A pipeline's FiftyOne dataset, built while another FiftyOne of the same user runs with
    its own database service and a dataset of the same name (another checkout, an App open)."""
    from test_workflow import copy_workflow

    wf = copy_workflow(tmp_path_factory.mktemp("curate") / "wf")
    (wf / "small.yaml").write_text(yaml.safe_dump(SMALL))
    env = {**os.environ, "HOME": str(wf / "home")}  # FiftyOne's own files stay in the run
    other = tmp_path_factory.mktemp("other")
    decoy = subprocess.Popen(
        [sys.executable, "-c", DECOY],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(other), "FIFTYONE_DATABASE_DIR": str(other / "db")},
        start_new_session=True,
    )
    try:
        lines = []  # FiftyOne may print notices before
        for line in decoy.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert lines and lines[-1].strip() == "ready", "".join(lines)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "fiftyone",
                "--cores",
                "2",
                "--configfile",
                "small.yaml",
            ],
            cwd=wf,
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        yield wf, env
    finally:
        os.killpg(decoy.pid, signal.SIGKILL)
        decoy.wait()
        for pid in _service_pids(b"--51-service", str(other / "db").encode()):
            os.kill(pid, signal.SIGKILL)  # the decoy's database service outlives it


def test_fiftyone_dataset_holds_the_pipelines_results(curated):
    wf, env = curated
    summary = json.loads((wf / "results/demo/fiftyone.json").read_text())
    rows = pq.read_table(wf / "results/demo/standardized.parquet").to_pylist()
    assert summary["n_samples"] == len(rows) == 30
    db = Path(summary["database_dir"])
    assert db == (wf / "results/demo/fiftyone/db").resolve() and any(db.iterdir())
    assert not (Path.home() / ".fiftyone" / "var" / "lib" / "mongo" / "demo").exists()
    # a fresh process sees the persistent dataset
    probe = """
import json, os, sys
import fiftyone as fo
ds = fo.load_dataset("demo")
s = ds.match((fo.ViewField("ground_truth.label") == "anomaly") & (fo.ViewField("split") == "test")).first()
print(json.dumps({
  "n": len(ds), "fields": sorted(ds.get_field_schema()), "tags": ds.count_sample_tags(),
  "views": ds.list_saved_views(), "brain": sorted(ds.list_brain_runs()),
  "pred": [s.pred_patchcore.label, s.pred_patchcore.confidence], "map": s.map_patchcore.map_path,
  "mask": s.mask.mask_path, "emb": len(s.embedding), "viz": ds.load_brain_results("visualization").points.shape[1],
  "similar": ds.sort_by_similarity(s.id, k=3, brain_key="similarity").values("image_id"),
}))
"""
    assert not (db.parent / "mongod.json").exists()  # the build job stopped its database
    probe = (
        f"from defectflow.curation.fiftyone import database\nwith database({str(db)!r}):\n"
        + "\n".join("    " + line for line in probe.strip().splitlines())
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["n"] == 30
    for f in (
        "category",
        "split",
        "ground_truth",
        "mask",
        "embedding",
        "uniqueness",
        "pred_knn",
        "pred_padim",
        "pred_patchcore",
        "map_padim",
        "map_patchcore",
    ):
        assert f in got["fields"], f
    assert "map_knn" not in got["fields"]  # kNN makes no maps
    assert got["pred"][0] in ("normal", "anomaly") and 0 <= got["pred"][1] <= 1
    assert Path(got["map"]).is_file() and Path(got["mask"]).is_file()
    (table,) = (wf / "results/demo/embeddings").glob("*/bracket/shard-000-of-001.parquet")
    stored = pq.read_table(table)
    assert got["emb"] == len(stored["embedding"][0]) and got["viz"] == 2  # the stored vectors
    assert got["brain"] == ["similarity", "uniqueness", "visualization"]
    assert set(got["views"]) >= {
        "patchcore_false_positives",
        "patchcore_false_negatives",
        "knn_false_positives",
        "most_unique_normals",
    }
    assert got["tags"].get("LEAKAGE_NEAR", 0) > 0  # preflight issues are sample tags
    # near-duplicates relative to how alike the images are: not every sample of one product
    assert 0 < summary["near_duplicate_distance"] <= 0.05
    assert got["tags"].get("near_duplicate", 0) <= 30 // 3
    assert len(got["similar"]) == 3
    # the prediction is the pipeline's, not recomputed
    preds = {
        json.loads(x)["image_id"]: json.loads(x)
        for x in (wf / "results/demo/models/patchcore/bracket/predictions.jsonl")
        .read_text()
        .splitlines()
    }
    assert summary["saved_views"]["patchcore_false_positives"] == sum(
        p["gt_label"] == "normal" and p["pred_label"] == "anomaly" for p in preds.values()
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service_pids(*words: bytes) -> list[int]:
    """Processes whose command line holds every word (FiftyOne's services, a mongod)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if all(w in cmd for w in words):
            pids.append(int(pid))
    return pids


def test_app_serves_the_dataset(curated):
    wf, env = curated
    port = _free_port()
    app = subprocess.Popen(
        [*DEFECTFLOW, "app", "demo", "--port", str(port)],
        cwd=wf,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    import threading

    said: list[str] = []  # what it prints, read as it comes (its URL line follows the server start)
    reader = threading.Thread(target=lambda: said.extend(app.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline, ok = time.monotonic() + 120, False
        while time.monotonic() < deadline and app.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    ok = resp.status == 200
                    break
            except OSError:
                time.sleep(1)
        assert ok, f"the App did not answer on port {port}"
        query = json.dumps({"query": '{ dataset(name: "demo") { name estimatedSampleCount } }'})
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql",
            data=query.encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = json.loads(resp.read())["data"]["dataset"]
        assert data == {"name": "demo", "estimatedSampleCount": 30}
        while time.monotonic() < deadline and not any(url in line for line in said):
            time.sleep(0.2)  # the server answers a moment before the command prints its URL
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
        reader.join(timeout=10)
        for pid in _service_pids(b"--51-service", str(port).encode()):  # the App's server
            os.kill(pid, signal.SIGKILL)  # outlives its launcher
    assert any(url in line for line in said), said
    db = wf / "results/demo/fiftyone/db"
    assert not (db.parent / "mongod.json").exists()  # the App stopped its database on SIGTERM
    assert not _service_pids(b"mongod", str(db.resolve()).encode())


def test_app_without_a_built_dataset_says_what_to_do(tmp_path):
    r = subprocess.run(
        [*DEFECTFLOW, "app", "nope", "--results", str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "snakemake fiftyone" in r.stderr and "Traceback" not in r.stderr


def test_similar_finds_the_image_itself_first(curated):
    wf, env = curated
    query = wf / "resources/demo/bracket/train/good/003.png"
    r = subprocess.run(
        [*DEFECTFLOW, "similar", str(query), "--dataset", "demo", "-k", "5", "--json"],
        cwd=wf,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert len(hits) == 5 and hits[0]["image_path"] == str(query) and hits[0]["distance"] < 1e-5
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    table = subprocess.run(
        [*DEFECTFLOW, "similar", str(query), "--dataset", "demo"],
        cwd=wf,
        capture_output=True,
        text=True,
    )
    assert table.returncode == 0 and str(query) in table.stdout.splitlines()[1]
    bad = subprocess.run(
        [*DEFECTFLOW, "similar", str(query), "--dataset", "demo", "--category", "tile"],
        cwd=wf,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "known: ['bracket']" in bad.stderr
    broken = wf / "broken.png"  # a truncated copy: the message names the file
    broken.write_bytes(query.read_bytes()[:300])
    r = subprocess.run(
        [*DEFECTFLOW, "similar", str(broken), "--dataset", "demo"],
        cwd=wf,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and str(broken) in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_similar_asks_which_backbone_after_a_backbone_sweep(tmp_path):
    from defectflow.curation.similar import find_similar
    from defectflow.errors import DefectflowError

    for bb in ("tf_efficientnet_lite0_L23_p3_s224", "tf_efficientnet_lite1_L23_p3_s224"):
        (tmp_path / "demo/embeddings" / bb / "tile").mkdir(parents=True)
    with pytest.raises(
        DefectflowError, match="2 backbones; choose one with --backbone: tf_efficientnet_lite0"
    ):
        find_similar(tmp_path / "q.png", "demo", results=tmp_path)
    with pytest.raises(DefectflowError, match="no embeddings of backbone 'resnet18'"):
        find_similar(tmp_path / "q.png", "demo", results=tmp_path, backbone="resnet18")


def test_near_duplicate_cut_tags_copies_not_look_alikes():
    """Images of one product are all alike: the cut follows the dataset's own nearest-neighbour
    distances, so a re-shot (a copy with a little noise) is under it and ordinary neighbours
    are not."""
    import numpy as np

    from defectflow.curation.fiftyone import near_duplicate_cut

    rng = np.random.default_rng(0)
    base = rng.normal(size=64)
    emb = base + 0.15 * rng.normal(size=(40, 64))  # alike: nearest neighbours at cosine ~0.02
    emb = np.vstack([emb, emb[0] + 0.001 * rng.normal(size=64)]).astype(np.float32)
    cut = near_duplicate_cut(emb)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    d = 1 - unit @ unit.T
    np.fill_diagonal(d, np.inf)
    assert d[0, 40] < cut < 0.05
    assert (d.min(axis=1) < cut).sum() == 2  # the copy and its original, nothing else
