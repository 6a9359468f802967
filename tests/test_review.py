"""The Label Studio review roundtrip against a real Label Studio (its own venv, `make
labelstudio`) on 127.0.0.1: tasks from a pipeline run, push, a reviewer's correction posted
through the API, pull, and a rerun in which the corrected label reaches standardized.parquet
while the untouched category's embeddings are not recomputed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO
from PIL import Image

from defectflow.curation.review import LabelStudio

pytestmark = pytest.mark.slow
LS_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
LEGACY = "0123456789abcdef0123456789abcdef01234567"  # a legacy token: off on a default server
EMAIL, PASSWORD = "reviewer@example.com", "review-pass-123"
TOKENS: dict[str, str] = {}  # the reviewer's Personal Access Token, made at the fixture
SMALL = {
    "demo": {"n_train": 12, "n_test_normal": 4, "n_test_per_defect": 2},
    "threshold": {"folds": 3},
    "review": {"margin": 0.5},  # every test image becomes a task
}
DEFECTFLOW = [sys.executable, "-m", "defectflow.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if not LS_BIN.exists():
        r = subprocess.run(["make", "labelstudio"], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0 or not LS_BIN.exists():
            pytest.skip(
                f"Label Studio could not be installed (`make labelstudio`): {r.stderr[-500:]}"
            )
    home = tmp_path_factory.mktemp("ls")
    port = _free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "LABEL_STUDIO_USERNAME": EMAIL,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": LEGACY,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/",
    }
    log = open(home / "ls.log", "w")  # noqa: SIM115 - the server writes it while we run
    proc = subprocess.Popen(
        [
            str(LS_BIN),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(home / "data"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # migrations of a fresh database: 75-95 s here
        while time.monotonic() < deadline:
            assert proc.poll() is None, (home / "ls.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if b"UP" in resp.read():
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(
                "Label Studio did not become healthy: " + (home / "ls.log").read_text()[-3000:]
            )
        TOKENS["pat"] = _personal_access_token(url)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _personal_access_token(url: str) -> str:
    """What a new user does in the browser: log in, Account & Settings > Personal Access Token >
    Create (the server's default token kind)."""
    import http.cookiejar
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def csrf() -> str:
        return next(c.value for c in jar if c.name == "csrftoken")

    web.open(f"{url}/user/login/", timeout=30).read()
    form = urllib.parse.urlencode(
        {"email": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": csrf()}
    )
    web.open(
        urllib.request.Request(
            f"{url}/user/login/", data=form.encode(), headers={"Referer": f"{url}/user/login/"}
        ),
        timeout=30,
    ).read()
    req = urllib.request.Request(
        f"{url}/api/token/",
        data=b"{}",
        method="POST",
        headers={"X-CSRFToken": csrf(), "Content-Type": "application/json", "Referer": f"{url}/"},
    )
    with web.open(req, timeout=30) as resp:
        token = json.loads(resp.read())["token"]
    assert token.startswith("eyJ") and token.count(".") == 2  # a JWT refresh token
    return token


def _api(url: str, method: str, path: str, body=None):
    """The reviewer's side of the API, through the package's own client."""
    return LabelStudio(url, TOKENS["pat"]).call(method, path, body)


def test_review_roundtrip(label_studio, workflow_dir):
    wf, url = workflow_dir, label_studio
    (wf / "small.yaml").write_text(yaml.safe_dump(SMALL))
    sm = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "small.yaml"]
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "review", *sm[3:]],
        cwd=wf,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tasks = json.loads((wf / "results/demo/review/tasks.json").read_text())
    assert len(tasks) == 12  # 2 categories x 6 test images (4 of 10 held out as val), margin 0.5
    with_maps = [t for t in tasks if t["data"]["model"] != "knn"]
    assert with_maps, "the best model of a category should be one with maps"
    kinds = {x["type"] for t in with_maps for x in t["predictions"][0]["result"]}
    assert {"choices", "rectanglelabels", "brushlabels"} <= kinds
    assert "<BrushLabels" in (wf / "results/demo/review/labeling_config.xml").read_text()

    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKENS["pat"]}
    push = subprocess.run(
        [*DEFECTFLOW, "review", "push", "--dataset", "demo"],
        cwd=wf,
        env=env,
        capture_output=True,
        text=True,
    )
    assert push.returncode == 0 and "12 tasks imported" in push.stdout, push.stdout + push.stderr
    assert TOKENS["pat"] not in push.stdout + push.stderr
    again = subprocess.run(
        [*DEFECTFLOW, "review", "push", "--dataset", "demo"],
        cwd=wf,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "0 tasks imported, 12 already there" in again.stdout
    project = json.loads((wf / "results/demo/review/project.json").read_text())["id"]
    ls_tasks = _api(url, "GET", f"/api/tasks?project={project}&page_size=100")["tasks"]
    assert len(ls_tasks) == 12 and all(t["total_predictions"] == 1 for t in ls_tasks)
    # Label Studio serves the images themselves
    with urllib.request.urlopen(
        urllib.request.Request(
            url + ls_tasks[0]["data"]["image"],
            headers={"Authorization": LabelStudio(url, TOKENS["pat"]).auth_header()},
        ),
        timeout=30,
    ) as resp:
        assert resp.status == 200 and resp.read(8).startswith(b"\x89PNG")

    # a reviewer marks a normal bracket image as anomalous, painting the defect
    from defectflow.curation.review_tasks import _sdk_brush

    task = next(
        t for t in ls_tasks if t["data"]["category"] == "bracket" and t["data"]["label"] == "normal"
    )
    paint = np.zeros((224, 224), np.uint8)
    paint[40:70, 100:150] = 255
    _api(
        url,
        "POST",
        f"/api/tasks/{task['id']}/annotations",
        {
            "result": [
                {
                    "from_name": "verdict",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": ["anomaly"]},
                },
                {
                    "from_name": "mask",
                    "to_name": "image",
                    "type": "brushlabels",
                    "original_width": 224,
                    "original_height": 224,
                    "value": {
                        "format": "rle",
                        "rle": _sdk_brush().mask2rle(paint),
                        "brushlabels": ["defect"],
                    },
                },
            ]
        },
    )
    pull = subprocess.run(
        [*DEFECTFLOW, "review", "pull", "--dataset", "demo"],
        cwd=wf,
        env=env,
        capture_output=True,
        text=True,
    )
    assert pull.returncode == 0, pull.stderr
    corr = [json.loads(x) for x in (wf / "corrections/demo.jsonl").read_text().splitlines()]
    assert len(corr) == 1 and corr[0]["label"] == "anomaly"
    assert corr[0]["image_path"] == task["data"]["image_path"]
    assert (np.asarray(Image.open(corr[0]["mask_path"])) > 0).sum() == paint.astype(bool).sum()

    # the corrections become a source; only what they affect reruns
    tile_shards = sorted((wf / "results/demo/embeddings").glob("*/tile/shard-*"))
    before = {p: p.stat().st_mtime_ns for p in tile_shards}
    cfg = yaml.safe_load((wf / "small.yaml").read_text())
    cfg["datasets"] = {
        "demo": {
            "sources": [{"type": "demo"}, {"type": "corrections", "path": "corrections/demo.jsonl"}]
        }
    }
    (wf / "small.yaml").write_text(yaml.safe_dump(cfg))
    rerun = subprocess.run(sm, cwd=wf, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    rows = {
        r["image_id"]: r
        for r in pq.read_table(wf / "results/demo/standardized.parquet").to_pylist()
    }
    fixed = rows[task["data"]["image_id"]]
    assert fixed["label"] == "anomaly" and fixed["mask_path"] == corr[0]["mask_path"]
    assert {p: p.stat().st_mtime_ns for p in tile_shards} == before  # tile untouched
    assert (
        "embed" in rerun.stdout + rerun.stderr and "category=bracket" in rerun.stdout + rerun.stderr
    )


def test_review_errors_change_nothing(label_studio, workflow_dir, tmp_path):
    url = label_studio
    wf = workflow_dir
    review = wf / "results/demo/review"
    review.mkdir(parents=True)
    (review / "tasks.json").write_text("[]")
    (review / "labeling_config.xml").write_text("<View/>")
    base = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKENS["pat"]}
    for env, message in (
        ({"LABEL_STUDIO_API_KEY": "not-the-token"}, "legacy tokens off by default"),
        ({"LABEL_STUDIO_API_KEY": LEGACY}, "create a Personal Access Token"),
        (
            {"LABEL_STUDIO_API_KEY": TOKENS["pat"][:-4] + "AAAA"},
            "Personal Access Token was refused",
        ),
        ({"LABEL_STUDIO_URL": f"http://127.0.0.1:{_free_port()}"}, "does not answer"),
    ):
        r = subprocess.run(
            [*DEFECTFLOW, "review", "push", "--dataset", "demo"],
            cwd=wf,
            env={**base, **env},
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "not-the-token" not in r.stderr + r.stdout
        assert not (review / "project.json").exists()
    # an export from another project: annotated tasks that are not this dataset's images
    choices = (
        "<View><Image name='image' value='$image'/><Choices name='verdict' toName='image'>"
        "<Choice value='normal'/><Choice value='anomaly'/></Choices></View>"
    )
    other = _api(url, "POST", "/api/projects", {"title": "someone else's", "label_config": choices})
    _api(
        url,
        "POST",
        f"/api/projects/{other['id']}/import",
        [{"data": {"image": "/x.png", "image_id": "x-1", "dataset": "other"}}],
    )
    t = _api(url, "GET", f"/api/tasks?project={other['id']}")["tasks"][0]
    _api(
        url,
        "POST",
        f"/api/tasks/{t['id']}/annotations",
        {
            "result": [
                {
                    "from_name": "verdict",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": ["normal"]},
                }
            ]
        },
    )
    (review / "project.json").write_text(
        json.dumps({"url": url, "id": other["id"], "dataset": "demo"})
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "results/demo/standardized.parquet",
            "--config",
            "demo={'categories': ['bracket'], 'n_train': 4, 'n_test_normal': 1, 'n_test_per_defect': 1}",
        ],
        cwd=wf,
        check=True,
        capture_output=True,
    )
    r = subprocess.run(
        [*DEFECTFLOW, "review", "pull", "--dataset", "demo", "--out", str(tmp_path / "c.jsonl")],
        cwd=wf,
        env=base,
        capture_output=True,
        text=True,
    )
    assert (
        r.returncode == 2
        and "not images of dataset 'demo'" in r.stderr
        and "Nothing was written" in r.stderr
    )
    assert not (tmp_path / "c.jsonl").exists()
