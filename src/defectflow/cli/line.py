"""`defectflow serve` and `watch`: the delivered model on the line (a service, a watched folder)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from defectflow.cli.common import EXIT_OK, refuse_overwriting_inputs
from defectflow.cli.deploy import _positive, _rate
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow")

RUNTIMES = ["onnxruntime", "openvino", "openvino-int8"]


def _bytes(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("b")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 32M or 500k") from None


def _info_logging() -> None:
    logging.getLogger("defectflow").setLevel(logging.INFO)


def cmd_serve(args: argparse.Namespace) -> int:
    # lazy: the web stack only where a service runs
    from defectflow.deploy.service import ServeOptions, run, token_from_env

    if not args.infer_config.is_file():
        raise DefectflowError(f"--infer-config {args.infer_config}: no such file")
    _info_logging()
    opts = ServeOptions(
        infer_config=args.infer_config.resolve(),
        threads=args.threads,
        runtime=args.runtime,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_bytes=args.max_bytes,
        alarm_window=args.alarm_window,
        expect_defect_rate=args.expect_defect_rate,
        token=token_from_env(),
    )
    run(opts, args.host, args.port)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs
    from defectflow.artifacts.infer_summary import summary_path
    from defectflow.deploy.stream import load_verified
    from defectflow.deploy.watch import Watcher, mqtt_sink, webhook_sink
    from defectflow.threads import limit_malloc_arenas, set_threads

    if not args.folder.is_dir():
        raise DefectflowError(f"{args.folder}: not a folder to watch")
    out = Path(args.out)
    refuse_overwriting_inputs(
        {"--out": out, "--out's summary": summary_path(out)}, [args.infer_config, args.folder]
    )
    _info_logging()
    limit_malloc_arenas()
    set_threads(args.threads)
    served = load_verified(
        args.infer_config,
        threads=args.threads,
        runtime=args.runtime,
        alarm_window=args.alarm_window,
        expect_defect_rate=args.expect_defect_rate,
    )
    sinks = []
    if args.webhook:
        sinks.append(webhook_sink(args.webhook))
    if args.mqtt:
        sinks.append(mqtt_sink(args.mqtt, args.mqtt_topic))
    w = Watcher(
        args.folder,
        served,
        out,
        settle_s=args.settle,
        recursive=not args.no_recursive,
        batch=args.batch_size,
        sinks=sinks,
    )
    w.install_signals()
    print(
        f"watching {args.folder} with {served.model_id} -> {out} (SIGTERM or Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    w.run()
    print(f"stopped: {w.scored_total} records in {out}", file=sys.stderr)
    return EXIT_OK


def cmd_openvino(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs
    from defectflow.deploy.inputs import gather_images
    from defectflow.deploy.openvino_runtime import REPORT, check_openvino
    from defectflow.threads import set_threads

    set_threads(args.threads)
    normals = sorted(Path(it["image_path"]) for it in gather_images(args.normals, None))
    r = check_openvino(args.infer_config, normals, threads=args.threads)
    fp32, int8 = r["openvino_fp32"], r["openvino_int8"]
    print(
        f"onnxruntime {r['onnxruntime']['images_per_s']:.1f} images/s; OpenVINO FP32 "
        f"{fp32['images_per_s']:.1f} images/s, scores within {fp32['parity']['max_rel_diff']:.1e} "
        f"(relative), labels agree on {fp32['labels_agree']} of "
        f"{r['images']['normal'] + r['images']['synthetic_defects']}; INT8 "
        f"{int8['images_per_s']:.1f} images/s"
    )
    print(f"  {int8['message']}")
    print(f"-> {args.infer_config.parent / REPORT}")
    return EXIT_OK


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--infer-config",
        required=True,
        type=Path,
        help="infer_config.json of the model (the files it names beside it)",
    )
    s.add_argument("--threads", type=_positive, default=2, help="backbone and scoring threads")
    s.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="onnxruntime",
        help="what runs the backbone (default onnxruntime; openvino: FP32 on the CPU; "
        "openvino-int8: the INT8 model `defectflow openvino` offered)",
    )
    s.add_argument(
        "--alarm-window",
        type=_positive,
        default=500,
        help="images the rolling false-alarm check looks back over (default 500)",
    )
    s.add_argument(
        "--expect-defect-rate",
        type=_rate,
        default=0.0,
        help="share of defective parts expected (0.02: 2%%); the alarm allows the stated "
        "false-alarm rate plus this (default 0)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a delivered model over HTTP (POST /v1/predict, /metrics, hot swap)",
    )
    _common(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument(
        "--max-batch",
        type=_positive,
        default=8,
        help="images scored together at most (concurrent requests; default 8)",
    )
    s.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="how long the first image of a batch waits for company (default 0: requests "
        "that queued while the last batch was scored join the next)",
    )
    s.add_argument(
        "--max-bytes",
        type=_bytes,
        default="32M",
        help="largest request body (default 32M); larger ones get 413",
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser(
        "watch",
        help="score each image written into a folder, once, appending to a predictions JSONL",
    )
    s.add_argument("folder", type=Path, help="the folder images are dropped into")
    _common(s)
    s.add_argument(
        "--out", required=True, help="predictions JSONL to append to (kept across restarts)"
    )
    s.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds a file's size must hold still before it is read, where no close-write "
        "event says the writer is done (default 0.5)",
    )
    s.add_argument("--no-recursive", action="store_true", help="ignore subfolders")
    s.add_argument("--batch-size", type=_positive, default=8, help="images scored together")
    s.add_argument("--webhook", help="POST each record as JSON to this URL")
    s.add_argument("--mqtt", help="publish each record to this MQTT broker (host[:port])")
    s.add_argument(
        "--mqtt-topic", default="defectflow/predictions", help="MQTT topic for the records"
    )
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser(
        "openvino",
        help="check a model in OpenVINO (FP32 parity with onnxruntime; INT8 offered only where "
        "its AUROC holds) and write openvino_report.json beside it",
    )
    s.add_argument("--infer-config", required=True, type=Path, help="the model's infer_config.json")
    s.add_argument(
        "--normals",
        required=True,
        nargs="+",
        type=Path,
        help="good images of the line (folders, files or a manifest): half calibrate INT8, half "
        "(and synthetic defects made on them) measure it",
    )
    s.add_argument("--threads", type=_positive, default=2, help="runtime threads")
    s.set_defaults(func=cmd_openvino)
