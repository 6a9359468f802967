"""On the line: `defectflow serve` and `watch` against the bare backbone, in one run.

    .venv/bin/python bench/serve.py [--category bracket] [--requests 10000] [--clients 8]
                                    [--watch-images 1000] [--skip openvino watch ...]

Needs the default demo's models (224 px; `make demo`). Sections, each printing figures and the
ratio to a baseline measured in the same run:

- latency: warm single-image requests, one at a time, p50/p99 for knn, PaDiM and PatchCore,
  against the bare backbone's single-image forward (onnxruntime, same threads) in this process;
- throughput: 8 concurrent clients for ``--seconds``, against the backbone's best batched
  throughput (batch 1-16, the best);
- soak: ``--requests`` requests from 8 clients: errors, the server's resident memory after the
  first 1,000 and at the end;
- hot swap under load: the same load while the model is swapped (knn <-> PaDiM) every 2 s:
  failed requests, model ids in the answers;
- OpenVINO: `defectflow openvino` per model: FP32 and INT8 images/s against onnxruntime, score
  parity, the INT8 verdict;
- watch: ``--watch-images`` distinct images copied into a watched folder, a kill -9 midway, a
  restart: each image must be in the output exactly once.

The clients run in this process, so they share the 2 cores with the server: the figures are what
one machine gives, client included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "defectflow.cli"]
MODELS = ("knn", "padim", "patchcore")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, ic: Path, threads: int, *extra: str) -> None:
        self.url = f"http://127.0.0.1:{(port := _port())}"
        self.proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--infer-config",
                str(ic),
                "--port",
                str(port),
                "--threads",
                str(threads),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"server for {ic} not healthy")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def load(url: str, bodies: list[bytes], clients: int, *, seconds=None, total=None, on=None):
    """``clients`` threads posting images until ``seconds`` pass or ``total`` are sent:
    (answers [(status, model_id)], elapsed s)."""
    answers: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    sent = [0]
    stop = time.perf_counter() + (seconds or 1e9)

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            i = k
            while time.perf_counter() < stop:
                with lock:
                    if total is not None and sent[0] >= total:
                        return
                    sent[0] += 1
                try:
                    r = c.post("/v1/predict", content=bodies[i % len(bodies)])
                    a = (r.status_code, r.json().get("model_id"))
                except httpx.HTTPError as exc:
                    a = (-1, type(exc).__name__)
                with lock:
                    answers.append(a)
                    if on is not None:
                        on(len(answers))
                i += clients

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return answers, time.perf_counter() - t


def backbone_baseline(ic: Path, image: Path, threads: int) -> dict:
    from defectflow.deploy.detector import Detector
    from defectflow.features.preprocess import load_rgb, to_array

    det = Detector.load(ic, threads=threads)
    x = to_array(load_rgb(image), det.pp)[None]
    for _ in range(10):
        det.backbone(x)
    one = []
    for _ in range(100):
        t = time.perf_counter()
        det.backbone(x)
        one.append(time.perf_counter() - t)
    best = 0.0
    for b in (1, 2, 4, 8, 16):
        xb = np.repeat(x, b, 0)
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < 3:
            det.backbone(xb)
            n += b
        best = max(best, n / (time.perf_counter() - t))
    return {"p50": statistics.median(one), "p99": _pct(one, 99), "best_ips": best}


def bench_latency(models: dict[str, Path], bodies: list[bytes], base: dict, a) -> None:
    print(f"\n## Latency and throughput ({a.category}, 224 px, {a.threads} threads)")
    print(
        f"bare backbone single-image forward: p50 {base['p50'] * 1e3:.1f} ms, p99 "
        f"{base['p99'] * 1e3:.1f} ms; best batched throughput {base['best_ips']:.1f} images/s"
    )
    print("| model | p50 ms | p99 ms | p50 / backbone | 8 clients images/s | / backbone best |")
    print("|---|---|---|---|---|---|")
    for m, ic in models.items():
        srv = Server(ic, a.threads, *a.serve_args)
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                for b in bodies[:20]:
                    c.post("/v1/predict", content=b)
                lat = []
                for i in range(200):
                    t = time.perf_counter()
                    r = c.post("/v1/predict", content=bodies[i % len(bodies)])
                    lat.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
            answers, el = load(srv.url, bodies, a.clients, seconds=a.seconds)
            ok = sum(s == 200 for s, _ in answers)
        finally:
            srv.stop()
        p50 = statistics.median(lat)
        print(
            f"| {m} | {p50 * 1e3:.1f} | {_pct(lat, 99) * 1e3:.1f} | {p50 / base['p50']:.2f}x | "
            f"{ok / el:.1f} | {ok / el / base['best_ips']:.2f}x |"
        )


def bench_soak(ic: Path, bodies: list[bytes], a) -> None:
    print(f"\n## {a.requests} requests, {a.clients} clients (knn)")
    srv = Server(ic, a.threads)
    marks: dict[str, float] = {}

    def on(n: int) -> None:
        if n == 1000:
            marks["warm"] = _rss_mb(srv.proc.pid)

    try:
        answers, el = load(srv.url, bodies, a.clients, total=a.requests, on=on)
        end = _rss_mb(srv.proc.pid)
    finally:
        srv.stop()
    errors = sum(s != 200 for s, _ in answers)
    warm = marks.get("warm", float("nan"))
    print(
        f"{len(answers)} requests in {el:.1f} s ({len(answers) / el:.1f}/s): {errors} errors; "
        f"resident memory {warm:.1f} MB after 1,000, {end:.1f} MB at the end "
        f"({(end - warm) / warm:+.1%})"
    )


def bench_swap(models: dict[str, Path], bodies: list[bytes], a) -> None:
    print("\n## Hot swap under load (knn <-> padim every 2 s, 8 clients)")
    from defectflow.artifacts.infer_config import read_infer_config

    ids = {m: read_infer_config(models[m]).model_id for m in ("knn", "padim")}
    srv = Server(models["knn"], a.threads)
    stop = threading.Event()
    swaps: list[int] = []

    def swapper() -> None:
        order = ["padim", "knn"] * 4
        for m in order:
            if stop.wait(2.0):
                return
            r = httpx.post(
                srv.url + "/v1/model", json={"infer_config": str(models[m])}, timeout=120
            )
            swaps.append(r.status_code)

    th = threading.Thread(target=swapper)
    th.start()
    try:
        answers, el = load(srv.url, bodies, a.clients, seconds=18)
    finally:
        stop.set()
        th.join()
        srv.stop()
    failed = sum(s != 200 for s, _ in answers)
    seen = {m for _, m in answers}
    print(
        f"{len(answers)} requests in {el:.1f} s, {len(swaps)} swaps ({swaps.count(200)} done): "
        f"{failed} failed; model ids answered: "
        f"{', '.join(sorted(k for k, v in ids.items() if v in seen))}"
        f"{'' if seen <= set(ids.values()) else ' and OTHERS: ' + str(seen - set(ids.values()))}"
    )


def bench_openvino(models: dict[str, Path], normals: Path, a, tmp: Path) -> None:
    print("\n## OpenVINO against onnxruntime (`defectflow openvino`)")
    print(
        "| model | onnxruntime images/s | FP32 images/s | FP32 max rel diff | INT8 images/s | INT8 |"
    )
    print("|---|---|---|---|---|---|")
    for m, ic in models.items():
        d = tmp / f"ov-{m}"
        shutil.copytree(ic.parent, d, ignore=shutil.ignore_patterns("maps", "scores"))
        cfg = json.loads(ic.read_text())
        shutil.copy((ic.parent / cfg["backbone"]["path"]).resolve(), d)
        r = subprocess.run(
            [
                *CLI,
                "openvino",
                "--infer-config",
                str(d / "infer_config.json"),
                "--normals",
                str(normals),
                "--threads",
                str(a.threads),
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            print(f"| {m} | failed: {r.stderr.strip()[-300:]} |")
            continue
        rep = json.loads((d / "openvino_report.json").read_text())
        o, f, q = rep["onnxruntime"], rep["openvino_fp32"], rep["openvino_int8"]
        print(
            f"| {m} | {o['images_per_s']:.1f} | {f['images_per_s']:.1f} "
            f"({f['images_per_s'] / o['images_per_s']:.2f}x) | {f['parity']['max_rel_diff']:.1e} | "
            f"{q['images_per_s']:.1f} ({q['images_per_s'] / o['images_per_s']:.2f}x) | "
            f"{q['message']} |"
        )


def bench_watch(ic: Path, sources: list[Path], a, tmp: Path) -> None:
    n = a.watch_images
    print(f"\n## watch: {n} images copied in while it runs, kill -9 midway, restart")
    stock = tmp / "stock"
    stock.mkdir()
    for i in range(n):  # distinct content: one pixel of a demo image changed per copy
        img = np.array(Image.open(sources[i % len(sources)]).convert("RGB"))
        img[0, 0] = [(i >> 16) & 255, (i >> 8) & 255, i & 255]
        Image.fromarray(img).save(stock / f"{i:05d}.png", compress_level=1)
    folder, out = tmp / "drop", tmp / "watch.jsonl"
    folder.mkdir()
    cmd = [
        *CLI,
        "watch",
        str(folder),
        "--infer-config",
        str(ic),
        "--out",
        str(out),
        "--threads",
        str(a.threads),
    ]

    def lines() -> int:
        return len(out.read_bytes().splitlines()) if out.exists() else 0

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    time.sleep(3)

    def copier() -> None:
        for f in sorted(stock.iterdir()):
            shutil.copy(f, folder / f.name)

    cp = threading.Thread(target=copier)
    cp.start()
    while lines() < n * 0.4:
        time.sleep(0.05)
    proc.kill()  # -9
    proc.wait()
    killed_at = lines()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    cp.join()
    deadline = time.time() + 1800
    while lines() < n and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    el = time.perf_counter() - t
    names = [Path(json.loads(x)["image_path"]).name for x in out.read_text().splitlines()]
    dup = len(names) - len(set(names))
    missing = n - len(set(names))
    print(
        f"{len(names)} records ({killed_at} before the kill) in {el:.1f} s ({n / el:.1f} images/s "
        f"with the restart): {dup} scored twice, {missing} missing"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results" / "demo")
    ap.add_argument("--resources", type=Path, default=REPO / "resources" / "demo")
    ap.add_argument("--category", default="bracket")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--watch-images", type=int, default=1000)
    ap.add_argument("--skip", nargs="*", default=[], help="latency soak swap openvino watch")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument(
        "--serve-args", default="", help="extra `defectflow serve` options (latency section)"
    )
    a = ap.parse_args()
    a.serve_args = a.serve_args.split()
    models = {m: a.results / "models" / m / a.category / "infer_config.json" for m in a.models}
    if not all(p.is_file() for p in models.values()):
        sys.exit(f"no demo models under {a.results}: run `make demo` first")
    images = sorted((a.resources / a.category / "test").rglob("*.png"))
    bodies = [p.read_bytes() for p in images]
    print(f"# bench/serve.py ({os.cpu_count()} cores; {len(images)} test images of {a.category})")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "latency" not in a.skip:
            base = backbone_baseline(models["knn"], images[0], a.threads)
            bench_latency(models, bodies, base, a)
        if "soak" not in a.skip:
            bench_soak(models["knn"], bodies, a)
        if "swap" not in a.skip:
            bench_swap(models, bodies, a)
        if "openvino" not in a.skip:
            bench_openvino(models, a.resources / a.category / "train" / "good", a, tmp)
        if "watch" not in a.skip:
            bench_watch(models["knn"], images, a, tmp)


if __name__ == "__main__":
    main()
