"""`defectflow infer` and `seal`: the delivered detector outside the workflow."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from defectflow.cli.common import EXIT_ERRORS, EXIT_OK, refuse_overwriting_inputs
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction in [0, 1) (0.02: 2%)")
    return value


def _maps_dir(maps: Path | None) -> Path | None:
    """``--maps``: a folder, made if missing; refused at once when a file is in the way."""
    if maps is None:
        return None
    for p in (maps, *maps.parents):
        if p.exists() and not p.is_dir():
            raise DefectflowError(f"--maps {maps}: {p} is a file, not a folder")
    maps.mkdir(parents=True, exist_ok=True)
    return maps


def _predictions_path(text: str | Path) -> Path:
    """``--out``: a file to write, or a folder (existing, or named with a trailing ``/``) to
    write ``predictions.jsonl`` into."""
    out = Path(text)
    if str(text).endswith(("/", "\\")) and not out.exists():
        out.mkdir(parents=True)
    if out.is_dir():
        out = out / "predictions.jsonl"
        if out.is_dir():
            raise DefectflowError(f"--out: {out} is a folder; name a file to write")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise DefectflowError(f"--out {out}: {parent} is a file, not a folder")
    return out


def cmd_infer(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.artifacts.infer_summary import InferSummary, summary_path, write_infer_summary
    from defectflow.artifacts.predictions import write_predictions
    from defectflow.deploy.detector import Detector
    from defectflow.deploy.inputs import gather_images
    from defectflow.false_alarms import check_batch

    out = _predictions_path(args.out)  # before any work: a bad --out or --maps is found at once
    refuse_overwriting_inputs(
        {"--out": out, "--out's summary": summary_path(out), "--maps": args.maps},
        [args.infer_config, *args.inputs],
    )
    _maps_dir(args.maps)
    det = Detector.load(
        args.infer_config, threads=args.threads, device=args.device, runtime=args.runtime
    )
    if args.category and args.category != det.cfg.category:
        raise DefectflowError(
            f"{args.infer_config} is a model of category {det.cfg.category!r}, not {args.category!r}"
        )
    items = gather_images(args.inputs, det.cfg.category)
    refuse_overwriting_inputs(
        {"--out": out, "--out's summary": summary_path(out)},
        [Path(it["image_path"]) for it in items],
    )
    records, _ = det.predict(items, batch_size=args.batch_size, maps_dir=args.maps)
    write_predictions(records, out)
    n_an = sum(r.pred_label == "anomaly" for r in records)
    failed = [r for r in records if r.error is not None]
    print(
        f"{len(records) - len(failed)} of {len(records)} images scored with {det.cfg.model_id}: {n_an} anomalous, "
        f"{len(failed)} could not be read -> {out}"
    )
    for r in failed[:5]:
        print(f"  {r.image_path}: {r.error}", file=sys.stderr)
    batch = check_batch(
        n_an, len(records) - len(failed), det.cfg.threshold.false_alarms, args.expect_defect_rate
    )
    write_infer_summary(
        InferSummary(
            model_id=det.cfg.model_id,
            predictions=out.name,
            n_images=len(records),
            n_errors=len(failed),
            n_flagged=n_an,
            batch=batch,
        ),
        summary_path(out),
    )
    if batch.alarm:
        print(f"defectflow infer: warning: {batch.message}", file=sys.stderr)
    else:
        print(f"  {batch.message}")
    if failed and len(failed) == len(records):
        print("defectflow infer: error: no image could be scored", file=sys.stderr)
        return EXIT_ERRORS
    return EXIT_OK


def cmd_seal(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.artifacts.infer_config import read_infer_config, write_infer_config
    from defectflow.models.thresholds import follow_threshold

    for f in args.files:
        old = read_infer_config(f, verify=False)
        t = follow_threshold(old.threshold)
        new = write_infer_config(old.model_copy(update={"threshold": t}), f)
        what = (
            "unchanged"
            if new.digest == old.digest
            else f"edited content sealed: new model id {new.model_id}"
        )
        print(f"{f}: {what}")
        if t is not old.threshold:
            print(
                f"  threshold {old.threshold.low + old.threshold.spread:.6g} -> {t.value:.6g}: normalized "
                f"scores follow (0.5 at {t.value:.6g}, 0 at {t.low:.6g})"
            )
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "infer",
        help="score images with a delivered model (infer_config.json); no Snakemake, no network",
    )
    s.add_argument(
        "--infer-config",
        required=True,
        type=Path,
        help="infer_config.json; the files it names must sit beside it",
    )
    s.add_argument("inputs", nargs="+", type=Path, help="image files, folders, or manifests")
    s.add_argument(
        "--out",
        default="predictions.jsonl",
        help="predictions JSONL, or a folder to write predictions.jsonl into (default: predictions.jsonl)",
    )
    s.add_argument("--maps", type=Path, help="write PNG heatmaps into this folder")
    s.add_argument(
        "--expect-defect-rate",
        type=_rate,
        default=0.0,
        help="share of defective parts expected in this batch (0.02: 2%%); the batch alarm allows "
        "the stated false-alarm rate plus this (default 0)",
    )
    s.add_argument("--category", help="refuse to run if the model is of another category")
    s.add_argument("--batch-size", type=_positive, default=16)
    s.add_argument("--threads", type=_positive, default=2, help="backbone threads")
    s.add_argument(
        "--device",
        default="cpu",
        choices=["auto", "cpu", "cuda"],
        help="where the backbone and nearest-neighbour search run (default cpu)",
    )
    s.add_argument(
        "--runtime",
        choices=["onnxruntime", "openvino", "openvino-int8"],
        default="onnxruntime",
        help="what runs the backbone on the CPU (default onnxruntime; openvino: FP32; "
        "openvino-int8: the INT8 model `defectflow openvino` offered)",
    )
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser(
        "seal",
        help="accept a hand-edited infer_config.json (e.g. a new threshold): record its digest, giving the model a new id",
    )
    s.add_argument("files", nargs="+", type=Path)
    s.set_defaults(func=cmd_seal)
