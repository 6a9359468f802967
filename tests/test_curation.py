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


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from test_workflow import copy_workflow

    wf = copy_workflow(tmp_path_factory.mktemp("curate") / "wf")
    (wf / "small.yaml").write_text(yaml.safe_dump(SMALL))
    env = {**os.environ, "HOME": str(wf / "home")}  # FiftyOne's own files stay in the run
    r = subprocess.run([sys.executable, "-m", "snakemake", "fiftyone", "--cores", "2",
                        "--configfile", "small.yaml"], cwd=wf, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return wf, env


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
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       env={**env, "FIFTYONE_DATABASE_DIR": str(db)})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["n"] == 30
    for f in ("category", "split", "ground_truth", "mask", "embedding", "uniqueness",
              "pred_knn", "pred_padim", "pred_patchcore", "map_padim", "map_patchcore"):  # fmt: skip
        assert f in got["fields"], f
    assert "map_knn" not in got["fields"]  # kNN makes no maps
    assert got["pred"][0] in ("normal", "anomaly") and 0 <= got["pred"][1] <= 1
    assert Path(got["map"]).is_file() and Path(got["mask"]).is_file()
    (table,) = (wf / "results/demo/embeddings").glob("*/bracket/shard-000-of-001.parquet")
    stored = pq.read_table(table)
    assert got["emb"] == len(stored["embedding"][0]) and got["viz"] == 2  # the stored vectors
    assert got["brain"] == ["similarity", "uniqueness", "visualization"]
    assert set(got["views"]) >= {"patchcore_false_positives", "patchcore_false_negatives",
                                 "knn_false_positives", "most_unique_normals"}  # fmt: skip
    assert got["tags"].get("LEAKAGE_NEAR", 0) > 0  # preflight issues are sample tags
    assert len(got["similar"]) == 3
    # the prediction is the pipeline's, not recomputed
    preds = {json.loads(x)["image_id"]: json.loads(x) for x in
             (wf / "results/demo/models/patchcore/bracket/predictions.jsonl").read_text().splitlines()}  # fmt: skip
    assert summary["saved_views"]["patchcore_false_positives"] == sum(
        p["gt_label"] == "normal" and p["pred_label"] == "anomaly" for p in preds.values()
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service_pids(port: int) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--51-service" in cmd and str(port).encode() in cmd:
            pids.append(int(pid))
    return pids


def test_app_serves_the_dataset(curated):
    wf, env = curated
    port = _free_port()
    app = subprocess.Popen([*DEFECTFLOW, "app", "demo", "--port", str(port)], cwd=wf, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # fmt: skip
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
        req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query.encode(),
                                     headers={"content-type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = json.loads(resp.read())["data"]["dataset"]
        assert data == {"name": "demo", "estimatedSampleCount": 30}
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            out, _ = app.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            out, _ = app.communicate()
        for pid in _service_pids(port):  # the App's server outlives its launcher
            os.kill(pid, signal.SIGKILL)
    assert f"http://127.0.0.1:{port}/" in out


def test_app_without_a_built_dataset_says_what_to_do(tmp_path):
    r = subprocess.run([*DEFECTFLOW, "app", "nope", "--results", str(tmp_path)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "snakemake fiftyone" in r.stderr and "Traceback" not in r.stderr


def test_similar_finds_the_image_itself_first(curated):
    wf, env = curated
    query = wf / "resources/demo/bracket/train/good/003.png"
    r = subprocess.run([*DEFECTFLOW, "similar", str(query), "--dataset", "demo", "-k", "5", "--json"],
                       cwd=wf, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert len(hits) == 5 and hits[0]["image_path"] == str(query) and hits[0]["distance"] < 1e-5
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    table = subprocess.run([*DEFECTFLOW, "similar", str(query), "--dataset", "demo"], cwd=wf,
                           capture_output=True, text=True)  # fmt: skip
    assert table.returncode == 0 and str(query) in table.stdout.splitlines()[1]
    bad = subprocess.run([*DEFECTFLOW, "similar", str(query), "--dataset", "demo", "--category", "tile"],
                         cwd=wf, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "known: ['bracket']" in bad.stderr


def test_similar_asks_which_backbone_after_a_backbone_sweep(tmp_path):
    from defectflow.errors import DefectflowError
    from defectflow.similar import find_similar

    for bb in ("tf_efficientnet_lite0_L23_p3_s224", "tf_efficientnet_lite1_L23_p3_s224"):
        (tmp_path / "demo/embeddings" / bb / "tile").mkdir(parents=True)
    with pytest.raises(
        DefectflowError, match="2 backbones; choose one with --backbone: tf_efficientnet_lite0"
    ):
        find_similar(tmp_path / "q.png", "demo", results=tmp_path)
    with pytest.raises(DefectflowError, match="no embeddings of backbone 'resnet18'"):
        find_similar(tmp_path / "q.png", "demo", results=tmp_path, backbone="resnet18")
