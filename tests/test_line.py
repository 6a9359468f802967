"""On the line: `defectflow serve` (a real server on a free port, a real HTTP client) and
`defectflow watch` (a real folder, real signals), against the demo's delivered models."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from test_workflow import _deliver

CLI = [sys.executable, "-m", "defectflow.cli"]
SAME = ("score", "normalized_score", "pred_label", "regions", "model_id", "error", "warnings")


@pytest.fixture(autouse=True)
def _no_orphans(monkeypatch):
    """Every process a test starts is killed when it ends, passed or failed."""
    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    class Tracked(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Tracked)
    yield
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`defectflow serve` in a subprocess; stopped by pid."""

    def __init__(self, ic: Path, *extra: str, env: dict | None = None) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(ic.parent / f"serve-{self.port}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--infer-config", str(ic), "--port", str(self.port), *extra],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not healthy in 90 s: {self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def delivered(demo_run, tmp_path_factory) -> dict[str, Path]:
    """Each model of the demo's bracket, copied out as a delivery folder."""
    base = tmp_path_factory.mktemp("deliver")
    return {
        m: _deliver(demo_run / "results/demo/models" / m / "bracket", base / m)
        for m in ("knn", "padim", "patchcore", "combined")
    }


def _pipeline(demo_run: Path, model: str) -> dict[str, dict]:
    src = demo_run / "results/demo/models" / model / "bracket" / "predictions.jsonl"
    return {
        Path(r["image_path"]).name + "@" + Path(r["image_path"]).parent.name: r
        for r in map(json.loads, src.read_text().splitlines())
    }


def _key(path: Path) -> str:
    return path.name + "@" + path.parent.name


def _same(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in SAME if a.get(k) != b.get(k)}


@pytest.mark.parametrize("model", ["padim", "patchcore", "combined"])
def test_serve_watch_and_infer_give_the_pipeline_records_bit_for_bit(
    demo_run, delivered, tmp_path, model
):
    """One scoring path: the pipeline's predictions.jsonl, `infer`, `serve` (one by one, and 8
    clients at once so requests share backbone batches) and `watch` give the same records."""
    pipeline = _pipeline(demo_run, model)
    images = sorted((demo_run / "resources/demo/bracket/test").rglob("*.png"))
    images = [p for p in images if _key(p) in pipeline]
    assert len(images) == len(pipeline) > 4

    srv = Server(delivered[model], "--max-batch", "8", "--max-wait-ms", "20")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:

            def post(p: Path) -> dict:
                r = c.post("/v1/predict", content=p.read_bytes(), params={"image_id": _key(p)})
                assert r.status_code == 200, r.text
                return r.json()

            alone = {_key(p): post(p) for p in images}
            with ThreadPoolExecutor(8) as ex:
                together = dict(zip(map(_key, images), ex.map(post, images), strict=True))
            batches = c.get("/metrics").text
    finally:
        assert srv.stop() in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    # the concurrent requests were scored in shared batches (else the check below shows nothing)
    counts = {
        line.split()[0]: float(line.split()[1])
        for line in batches.splitlines()
        if line.startswith("defectflow_batch_images_")
    }
    assert counts["defectflow_batch_images_sum"] > counts["defectflow_batch_images_count"]

    r = subprocess.run(
        [
            *CLI,
            "infer",
            "--infer-config",
            str(delivered[model]),
            *map(str, images),
            "--out",
            str(tmp_path / "infer.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    infer = {
        _key(Path(x["image_path"])): x
        for x in map(json.loads, (tmp_path / "infer.jsonl").read_text().splitlines())
    }

    folder = tmp_path / "drop"
    for p in images:
        dst = folder / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    out = tmp_path / "watch.jsonl"
    proc = subprocess.Popen(
        [*CLI, "watch", str(folder), "--infer-config", str(delivered[model]), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_lines(out, len(images), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    watched = {
        _key(Path(x["image_path"])): x for x in map(json.loads, out.read_text().splitlines())
    }

    for k, p in pipeline.items():
        for name, got in (
            ("alone", alone),
            ("concurrent", together),
            ("infer", infer),
            ("watch", watched),
        ):
            assert not _same(got[k], p), (name, k, _same(got[k], p))


def _wait_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if out.exists():
            rows = [json.loads(x) for x in out.read_text().splitlines()]
            if len(rows) >= n:
                return rows
        time.sleep(0.2)
    raise AssertionError(f"{out}: fewer than {n} records after {timeout} s")


def _png(size=(64, 64), color=(90, 90, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    """A PNG of a few kB declaring 20000 x 20000 px."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return buf.getvalue()


def test_every_endpoint_and_error_of_the_service(demo_run, delivered, tmp_path):
    img = next((demo_run / "resources/demo/bracket/test/good").glob("*.png"))
    srv = Server(delivered["knn"], "--max-bytes", "200k", env={"DEFECTFLOW_TOKEN": "s3cret"})
    auth = {"Authorization": "Bearer s3cret"}
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            h = c.get("/health")
            assert h.status_code == 200 and h.json()["model_id"].startswith("demo/bracket/knn@")
            # the token: without it (or wrong), 401; with it, answers
            assert c.post("/v1/predict", content=img.read_bytes()).status_code == 401
            bad = c.post("/v1/predict", content=img.read_bytes(), headers={"Authorization": "x"})
            assert bad.status_code == 401 and bad.json()["error"]["code"] == "UNAUTHORIZED"
            assert c.get("/metrics").status_code == 401
            c.headers.update(auth)
            one = c.post("/v1/predict", content=img.read_bytes(), params={"maps": "true"})
            assert one.status_code == 200 and one.json()["pred_label"] in ("normal", "anomaly")
            # knn has no map: no heatmap; a multipart file gives the same record
            assert "heatmap_png" not in one.json()
            mp = c.post("/v1/predict", files={"file": ("part.png", img.read_bytes())})
            assert mp.json()["score"] == one.json()["score"] and mp.json()["image_id"] == "part.png"
            # errors: each a 4xx JSON naming the problem; the server keeps serving
            for body, status, words in (
                (b"not an image", 400, "not an image format"),
                (img.read_bytes()[:300], 400, "cannot read image"),
                (b"", 400, "empty body"),
                (b"\0" * 300_000, 413, "takes up to"),
                (_bomb(), 413, "MP"),
            ):
                r = c.post("/v1/predict", content=body)
                assert r.status_code == status and words in r.json()["error"]["message"], r.text
            # a batch: one record each, in order, an unreadable part's record saying why
            files = [
                ("file", ("a.png", img.read_bytes())),
                ("file", ("broken.png", b"nope")),
                ("file", ("c.png", _png())),
            ]
            b = c.post("/v1/predict/batch", files=files)
            assert b.status_code == 200, b.text
            recs = b.json()
            assert [x["image_id"] for x in recs] == ["a.png", "broken.png", "c.png"]
            assert recs[0]["score"] == one.json()["score"] and recs[1]["error"] and recs[2]["score"]
            assert c.post("/v1/predict/batch", content=b"x").status_code == 415
            m = c.get("/metrics").text
            for name in (
                'defectflow_requests_total{endpoint="/v1/predict",outcome="ok"}',
                "defectflow_request_seconds_bucket",
                'defectflow_images_total{label="normal"}',
                "defectflow_alarm_flagged_share",
                "defectflow_alarm_stated_rate",
                "defectflow_alarm_state",
                "defectflow_batch_images_count",
            ):
                assert name in m, name
            assert 'outcome="413"' in m and 'outcome="400"' in m
            assert c.get("/health").status_code == 200  # still serving
    finally:
        srv.stop()


def test_padim_answers_a_heatmap(delivered, demo_run):
    img = next((demo_run / "resources/demo/bracket/test").rglob("*.png"))
    srv = Server(delivered["padim"])
    try:
        r = httpx.post(
            srv.url + "/v1/predict", content=img.read_bytes(), params={"maps": "1"}, timeout=60
        )
        heat = Image.open(io.BytesIO(base64.b64decode(r.json()["heatmap_png"])))
        assert heat.mode == "RGB" and min(heat.size) >= 32
    finally:
        srv.stop()


def test_hot_swap_under_load_drops_nothing_and_a_bad_model_is_refused(
    demo_run, delivered, tmp_path
):
    """Requests keep coming while the model is swapped (by POST and by SIGHUP): every answer is
    a 200 from the old or the new model; a model that fails verification leaves the old one."""
    img = next((demo_run / "resources/demo/bracket/test/good").glob("*.png")).read_bytes()
    from defectflow.artifacts.infer_config import read_infer_config

    live = tmp_path / "live"
    shutil.copytree(delivered["knn"].parent, live)
    new = read_infer_config(delivered["padim"]).model_id
    srv = Server(live / "infer_config.json", "--threads", "1")
    old = httpx.get(srv.url + "/health").json()["model_id"]
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/v1/predict", content=img)
                answers.append((r.status_code, r.json().get("model_id")))

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        time.sleep(1.0)
        r = httpx.post(
            srv.url + "/v1/model", json={"infer_config": str(delivered["padim"])}, timeout=120
        )
        assert r.status_code == 200 and r.json() == {"model_id": new, "previous": old}
        time.sleep(1.0)
        # a broken model (its checkpoint changed) is refused; the padim model keeps serving
        broken = tmp_path / "broken"
        shutil.copytree(delivered["patchcore"].parent, broken)
        ck = broken / "checkpoint.safetensors"
        good = ck.read_bytes()
        ck.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # the last byte flipped
        r = httpx.post(
            srv.url + "/v1/model",
            json={"infer_config": str(broken / "infer_config.json")},
            timeout=120,
        )
        assert r.status_code == 422 and "sha256" in r.json()["error"]["message"]
        assert httpx.get(srv.url + "/health").json()["model_id"] == new
        # SIGHUP re-reads the file the service runs (the padim one now): same model, reloaded
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        stop.set()
        for w in workers:
            w.join()
        metrics = httpx.get(srv.url + "/metrics").text
    finally:
        stop.set()
        srv.stop()
    assert answers and all(s == 200 for s, _ in answers), {s for s, _ in answers}
    ids = {m for _, m in answers}
    assert ids == {old, new}, ids
    assert 'defectflow_model_swaps_total{outcome="refused"} 1.0' in metrics
    assert 'defectflow_model_swaps_total{outcome="done"} 3.0' in metrics  # start, POST, SIGHUP


def test_sigterm_answers_every_accepted_request(demo_run, delivered):
    img = next((demo_run / "resources/demo/bracket/test/good").glob("*.png")).read_bytes()
    srv = Server(delivered["patchcore"], "--threads", "1")
    results: list[int] = []

    def one() -> None:
        try:
            r = httpx.post(srv.url + "/v1/predict", content=img, timeout=60)
            results.append(r.status_code)
        except httpx.HTTPError:
            results.append(-1)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # accepted, most still queued for the scorer
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    srv.proc.wait(timeout=60)
    accepted = [s for s in results if s != -1]
    assert accepted and all(s == 200 for s in accepted), results


def test_watch_scores_each_image_once_even_after_kill_9(demo_run, delivered, tmp_path):
    """Images written slowly are scored once whole; a kill -9 mid-stream and a restart leave
    each image in the output exactly once; the summary carries the rolling alarm."""
    src = sorted((demo_run / "resources/demo/bracket/train/good").glob("*.png"))
    folder, out = tmp_path / "drop", tmp_path / "out" / "p.jsonl"
    folder.mkdir()
    cmd = [*CLI, "watch", str(folder), "--infer-config", str(delivered["knn"]), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--settle", "0.5"], stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    # two files written in pieces, 0.2 s apart: never read half-written (test images the
    # pipeline scored, so the whole file's score is known)
    pipeline = _pipeline(demo_run, "knn")
    slow_src = [
        p
        for p in sorted((demo_run / "resources/demo/bracket/test/good").glob("*.png"))
        if _key(p) in pipeline
    ][:2]
    for p in slow_src:
        data = p.read_bytes()
        with open(folder / f"slow-{p.name}", "wb") as f:
            for i in range(0, len(data), max(1, len(data) // 5)):
                f.write(data[i : i + max(1, len(data) // 5)])
                f.flush()
                time.sleep(0.2)
    for p in src:
        shutil.copy(p, folder / p.name)
    _wait_lines(out, 5, proc)
    proc.kill()  # kill -9, mid-stream
    proc.wait()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    rows = _wait_lines(out, len(src) + 2, proc)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    names = [Path(r["image_path"]).name for r in rows]
    assert sorted(names) == sorted([p.name for p in src] + [f"slow-{p.name}" for p in slow_src])
    assert all(r["error"] is None and r["score"] is not None for r in rows), rows
    scores = {Path(r["image_path"]).name: r["score"] for r in rows}
    for p in slow_src:  # the whole file was scored
        assert scores[f"slow-{p.name}"] == pipeline[_key(p)]["score"]
    summary = json.loads((out.parent / "p.summary.json").read_text())
    assert summary["n_images"] == len(rows) and summary["batch"]["scored"] == len(rows)
    assert summary["batch"]["alarm"] is False


def test_watch_sends_each_record_to_a_webhook(demo_run, delivered, tmp_path):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    folder, out = tmp_path / "drop", tmp_path / "p.jsonl"
    folder.mkdir()
    src = sorted((demo_run / "resources/demo/bracket/test/good").glob("*.png"))[:3]
    url = f"http://127.0.0.1:{hook.server_port}/hook"
    proc = subprocess.Popen(
        [
            *CLI,
            "watch",
            str(folder),
            "--infer-config",
            str(delivered["knn"]),
            "--out",
            str(out),
            "--webhook",
            url,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    for p in src:
        shutil.copy(p, folder / p.name)
    _wait_lines(out, 3, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    hook.shutdown()
    assert sorted(r["image_id"] for r in got) == sorted(p.name for p in src)


def _mosquitto() -> str | None:
    if shutil.which("mosquitto"):
        return shutil.which("mosquitto")
    if os.geteuid() != 0:
        return None
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "mosquitto"],
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def test_watch_publishes_each_record_over_mqtt(demo_run, delivered, tmp_path):
    broker = _mosquitto()
    if broker is None:
        pytest.skip("mosquitto is not installed and apt-get could not install it (not root?)")
    import paho.mqtt.client as mqtt

    port = _port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc_b = subprocess.Popen([broker, "-c", str(conf)], stderr=subprocess.PIPE)
    got: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, msg: got.append(json.loads(msg.payload))
    for _ in range(50):
        try:
            sub.connect("127.0.0.1", port)
            break
        except OSError:
            time.sleep(0.1)
    sub.subscribe("line/1", qos=1)
    sub.loop_start()
    folder, out = tmp_path / "drop", tmp_path / "p.jsonl"
    folder.mkdir()
    src = sorted((demo_run / "resources/demo/bracket/test/good").glob("*.png"))[:3]
    proc = subprocess.Popen(
        [
            *CLI,
            "watch",
            str(folder),
            "--infer-config",
            str(delivered["knn"]),
            "--out",
            str(out),
            "--mqtt",
            f"127.0.0.1:{port}",
            "--mqtt-topic",
            "line/1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for p in src:
            shutil.copy(p, folder / p.name)
        _wait_lines(out, 3, proc)
        deadline = time.time() + 20
        while len(got) < 3 and time.time() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        sub.loop_stop()
        proc_b.terminate()
        proc_b.wait(timeout=10)
    assert sorted(r["image_id"] for r in got) == sorted(p.name for p in src)


def test_openvino_fp32_matches_onnxruntime_and_int8_is_offered_only_where_it_holds(
    demo_run, delivered, tmp_path
):
    """`defectflow openvino` writes the parity report; `infer --runtime openvino` scores as
    onnxruntime does (to float rounding: same labels); INT8 runs only where the report offers it."""
    folder = tmp_path / "m"
    shutil.copytree(delivered["padim"].parent, folder)
    ic = folder / "infer_config.json"
    normals = demo_run / "resources/demo/bracket/train/good"
    r = subprocess.run(
        [*CLI, "openvino", "--infer-config", str(ic), "--normals", str(normals)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads((folder / "openvino_report.json").read_text())
    fp32, int8 = rep["openvino_fp32"], rep["openvino_int8"]
    n = rep["images"]["normal"] + rep["images"]["synthetic_defects"]
    assert fp32["parity"]["images"] == n and fp32["parity"]["max_rel_diff"] < 1e-4
    assert fp32["labels_agree"] == n and int8["message"].startswith(
        ("INT8 offered", "INT8 refused")
    )
    assert (folder / "backbone-int8.xml").exists() == int8["offered"]
    r = subprocess.run([*CLI, "validate", str(folder / "openvino_report.json")])
    assert r.returncode == 0

    test = demo_run / "resources/demo/bracket/test"
    outs = {}
    for rt in ("onnxruntime", "openvino", "openvino-int8"):
        r = subprocess.run(
            [
                *CLI,
                "infer",
                "--infer-config",
                str(ic),
                str(test),
                "--runtime",
                rt,
                "--out",
                str(tmp_path / f"{rt}.jsonl"),
            ],
            capture_output=True,
            text=True,
        )
        if rt == "openvino-int8" and not int8["offered"]:
            assert r.returncode == 2 and "INT8 is not offered" in r.stderr, r.stderr
            continue
        assert r.returncode == 0, r.stderr
        outs[rt] = [json.loads(x) for x in (tmp_path / f"{rt}.jsonl").read_text().splitlines()]
    for a, b in zip(outs["onnxruntime"], outs["openvino"], strict=True):
        assert b["score"] == pytest.approx(a["score"], rel=1e-4)
        assert b["pred_label"] == a["pred_label"] or abs(a["normalized_score"] - 0.5) < 1e-3


def test_int8_verdict_needs_the_ranking_and_the_threshold_to_hold():
    from defectflow.deploy.openvino_runtime import int8_verdict

    assert int8_verdict(0.95, 0.948, "val")[0]
    ok, why = int8_verdict(0.95, 0.94, "val")
    assert not ok and "0.9500" in why and "0.9400" in why and "loses 0.0100" in why
    ok, why = int8_verdict(0.95, 0.95, "val", normals_flagged_int8=0.10, stated_high=0.045)
    assert not ok and "10.0%" in why and "4.5%" in why
    assert int8_verdict(0.95, 0.95, "val", normals_flagged_int8=0.02, stated_high=0.045)[0]
