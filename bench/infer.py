"""`defectflow infer` on one image: the wall time of the command a user runs, and where it goes.

    .venv/bin/python bench/infer.py [--infer-config results/demo/models/patchcore/tile/infer_config.json]
                                    [--image IMG] [--rounds 5]

Needs a delivered model (`make demo` makes the default one). The target is under 1.5 s for one
image on an idle 2-core machine. The baseline, measured in the same run, is the floor no command
of ours can beat: a Python process that imports numpy and onnxruntime and exits. Stages, in one
process: interpreter and imports, `Detector.load` (checks the files' sha256, opens the ONNX
session, loads the checkpoint), scoring the image (decode, backbone, search, map), writing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = """
import time, json, sys
t0 = time.perf_counter()
from defectflow.deploy.detector import Detector
from defectflow.artifacts.predictions import write_predictions
t1 = time.perf_counter()
det = Detector.load(sys.argv[1], threads=2)
t2 = time.perf_counter()
recs, _ = det.predict([{"image_path": sys.argv[2], "image_id": "x"}], batch_size=1)
t3 = time.perf_counter()
write_predictions(recs, sys.argv[3])
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "score": t3 - t2, "write": t4 - t3}))
"""


def _wall(cmd: list[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--infer-config",
        type=Path,
        default=REPO / "results/demo/models/patchcore/tile/infer_config.json",
    )
    ap.add_argument("--image", type=Path, default=REPO / "resources/demo/tile/test/good/000.png")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not args.infer_config.is_file() or not args.image.is_file():
        sys.exit(f"{args.infer_config} or {args.image} is missing: run `make demo` first")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "p.jsonl")
        floor = _wall([py, "-c", "import numpy, onnxruntime"], args.rounds)
        bare = _wall([py, "-c", "pass"], args.rounds)
        cmd = [
            py,
            "-m",
            "defectflow.cli",
            "infer",
            "--infer-config",
            str(args.infer_config),
            str(args.image),
            "--out",
            out,
        ]
        wall = _wall(cmd, args.rounds)
        stages = [
            json.loads(
                subprocess.run(
                    [py, "-c", STAGES, str(args.infer_config), str(args.image), out],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                ).stdout
            )
            for _ in range(args.rounds)
        ]
    model = json.loads(args.infer_config.read_text())["model"]
    print(f"defectflow infer, one image, model {model} (median of {args.rounds} runs)")
    print(f"  whole command            {wall:6.2f} s   (target < 1.5 s)")
    print(
        f"  baseline: python + numpy + onnxruntime imports {floor:5.2f} s  (bare python {bare:.2f} s)"
    )
    print(f"  ratio command / baseline {wall / floor:6.2f}x")
    print("  where the time goes, in one process:")
    for k in ("import", "load", "score", "write"):
        print(f"    {k:<8} {statistics.median(s[k] for s in stages):6.3f} s")


if __name__ == "__main__":
    main()
