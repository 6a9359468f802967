"""The ``defectflow`` command: the parts users run outside Snakemake."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from defectflow import __version__
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow")

EXIT_OK, EXIT_INTERNAL, EXIT_ERRORS = 0, 1, 2


def cmd_preflight(args: argparse.Namespace) -> int:
    import tempfile

    from defectflow.config import DatasetConfig, PreflightConfig, load_config
    from defectflow.data.ingest import ingest_sources
    from defectflow.data.preflight import (
        format_summary,
        preflight_records,
        unreadable_manifest_report,
        write_report,
    )
    from defectflow.data.sources import guess as guess_sources
    from defectflow.errors import ConfigError, ManifestError

    report, checks = None, PreflightConfig()
    try:  # a config that cannot be used is a report too (a CI gate reads the JSON)
        if args.config:
            checks = load_config(args.config).preflight
    except ConfigError as exc:
        report = unreadable_manifest_report(exc, args.dataset, str(args.config), checks)
    updates: dict = {"threads": args.threads}
    if args.verify:
        updates["verify"] = args.verify
    checks = checks.model_copy(update=updates)
    try:
        if report is None:
            sources = guess_sources(Path(args.path))
            for src in sources:
                if args.category:
                    src["category"] = args.category
            ds = DatasetConfig.model_validate({"sources": sources})
            with tempfile.TemporaryDirectory(prefix="defectflow-masks-") as masks:
                records = ingest_sources(ds.sources, dataset=args.dataset, mask_dir=masks)
                report, _ = preflight_records(records, checks, args.dataset, str(args.path))
    except ManifestError as exc:  # the input itself is unreadable: still a report
        report = unreadable_manifest_report(exc, args.dataset, str(args.path), checks)
    except (DefectflowError, OSError, ValueError) as exc:  # no such path, one the system refuses
        report = unreadable_manifest_report(
            ManifestError(f"{args.path}: cannot be read: {exc}"),
            args.dataset,
            str(args.path),
            checks,
        )
    assert report is not None
    print(format_summary(report, examples=args.examples))
    if args.json:
        write_report(report, args.json)
        print(f"report written to {args.json}")
    return EXIT_OK if report.ok else EXIT_ERRORS


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
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


def _predictions_path(out: Path) -> Path:
    """``--out``: a file to write, or an existing folder to write ``predictions.jsonl`` into."""
    if out.is_dir():
        out = out / "predictions.jsonl"
        if out.is_dir():
            raise DefectflowError(f"--out: {out} is a folder; name a file to write")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise DefectflowError(f"--out {out}: {parent} is a file, not a folder")
    return out


def cmd_infer(args: argparse.Namespace) -> int:
    from defectflow.artifacts.predictions import write_predictions
    from defectflow.deploy.detector import Detector
    from defectflow.deploy.inputs import gather_images

    out = _predictions_path(args.out)  # before any work: a bad --out or --maps is found at once
    _maps_dir(args.maps)
    det = Detector.load(args.infer_config, threads=args.threads, device=args.device)
    if args.category and args.category != det.cfg.category:
        raise DefectflowError(
            f"{args.infer_config} is a model of category {det.cfg.category!r}, not {args.category!r}"
        )
    items = gather_images(args.inputs, det.cfg.category)
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
    if failed and len(failed) == len(records):
        print("defectflow infer: error: no image could be scored", file=sys.stderr)
        return EXIT_ERRORS
    return EXIT_OK


def cmd_similar(args: argparse.Namespace) -> int:
    import json

    from defectflow.curation.similar import find_similar

    hits = find_similar(
        args.image, args.dataset, args.results, args.category, args.k, backbone=args.backbone
    )
    if args.json:
        print(json.dumps(hits, indent=2))
        return EXIT_OK
    print(f"{'#':>3}  {'distance':>8}  {'split':<5}  {'label':<7}  {'defect':<12}  image")
    for h in hits:
        print(
            f"{h['rank']:>3}  {h['distance']:>8.4f}  {h['split'] or '-':<5}  {h['label'] or '-':<7}  "
            f"{h['defect_type'] or '-':<12}  {h['image_path']}"
        )
    return EXIT_OK


def cmd_app(args: argparse.Namespace) -> int:
    from defectflow.curation.fiftyone import database, database_dir

    db = database_dir(args.results, args.dataset)
    if not db.is_dir():
        raise DefectflowError(
            f"no FiftyOne database for dataset {args.dataset!r} at {db}; build it with "
            "`snakemake fiftyone` (or export: {fiftyone: true} in the config)"
        )
    with database(db):
        import fiftyone as fo

        logging.getLogger("fiftyone").setLevel(logging.WARNING)  # it prints its banner itself
        if not fo.dataset_exists(args.dataset):
            raise DefectflowError(
                f"the FiftyOne database {db} holds no dataset {args.dataset!r} "
                f"(it has {fo.list_datasets()}); run `snakemake fiftyone`"
            )
        session = fo.launch_app(
            fo.load_dataset(args.dataset), remote=True, address=args.address, port=args.port
        )
        print(
            f"FiftyOne App for {args.dataset!r}: http://{args.address}:{args.port}/  (Ctrl-C stops it)",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            session.wait(-1)
    return EXIT_OK


def cmd_review(args: argparse.Namespace) -> int:
    from defectflow.curation import review

    if args.action == "push":
        got = review.push(args.dataset, args.results)
        print(
            f"Label Studio project {got['project']}: {got['imported']} tasks imported, "
            f"{got['already_there']} already there"
        )
    else:
        out = args.out or Path("corrections") / f"{args.dataset}.jsonl"
        got = review.pull(args.dataset, out, args.results)
        print(
            f"{got['corrections']} corrections from {got['annotated_tasks']} annotated tasks -> {out}\n"
            f"add to the dataset's sources: - {{type: corrections, path: {out}}}"
        )
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from defectflow.evaluation import runs

    rows = runs.load_registry(args.registry)
    if args.action == "list":
        summary = runs.runs_of(rows)
        if args.json:
            print(json.dumps(summary, indent=2))
            return EXIT_OK
        print(f"{'run':<24} {'time':<20} {'config':<12} {'commit':<11} rows  mean image AUROC")
        for s in summary:
            commit = (s["git_commit"] or "-") + ("*" if s["git_dirty"] else "")
            print(
                f"{s['run_id']:<24} {s['time']:<20} {s['config_sha256']:<12} {commit:<11} "
                f"{s['rows']:>4}  {s['mean_image_auroc']}"
            )
        return EXIT_OK
    if args.action == "show":
        picked = runs.baseline_rows(args.runs[0] if args.runs else "latest", args.registry)
        if args.json:
            print(json.dumps(picked, indent=2, default=str))
            return EXIT_OK
        r0 = picked[0]
        print(
            f"run {r0['run_id']} at {r0['time']}, commit {r0['git_commit']}{' (dirty)' if r0['git_dirty'] else ''}, "
            f"config {r0['config_sha256'][:12]}"
        )
        for r in picked:
            print(
                f"  {r['dataset']}/{r['category']}/{r['model']}: image AUROC {r['image_auroc']}, "
                f"F1 {r['f1']} (best {r['best_f1']}), pixel AUROC {r['pixel_auroc']}"
            )
        return EXIT_OK
    if len(args.runs) != 2:
        raise DefectflowError(
            "runs diff needs two runs: RUN_A RUN_B (ids, prefixes, latest, previous)"
        )
    a, b = (runs.baseline_rows(r, args.registry) for r in args.runs)
    d = runs.diff(a, b)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return EXIT_OK
    print("config changes:" if d["config_changes"] else "config: identical")
    for k, (va, vb) in d["config_changes"].items():
        print(f"  {k}: {va!r} -> {vb!r}")
    for m in d["metrics"]:
        au, f1 = m["image_auroc"], m["f1"]
        name = f"{m['dataset']}/{m['category']}/{m['model']}"
        if m["only_in"]:
            print(f"  {name}: only in run {m['only_in']}")
            continue
        delta = "" if au["delta"] is None else f" ({au['delta']:+.4f})"
        print(f"  {name}: image AUROC {au['a']} -> {au['b']}{delta}, F1 {f1['a']} -> {f1['b']}")
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    import json

    from defectflow.evaluation import runs

    current = runs.baseline_rows(args.current, args.registry)
    base = runs.baseline_rows(args.baseline, args.registry)
    failed = runs.gate(current, base, args.metric, args.max_drop)
    if args.json:
        print(
            json.dumps(
                {
                    "passed": not failed,
                    "metric": args.metric,
                    "max_drop": args.max_drop,
                    "failed": failed,
                },
                indent=2,
            )
        )
    elif failed:
        print(
            f"gate FAILED: {len(failed)} of {len(base)} results dropped {args.metric} by more than {args.max_drop}:"
        )
        for f in failed:
            now = "missing" if f["current"] is None else f"{f['current']:.4f} (-{f['drop']:.4f})"
            print(f"  {f['dataset']}/{f['category']}/{f['model']}: {f['baseline']:.4f} -> {now}")
    else:
        print(
            f"gate passed: no {args.metric} dropped by more than {args.max_drop} ({len(base)} results)"
        )
    return 1 if failed else EXIT_OK


def cmd_seal(args: argparse.Namespace) -> int:
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


def cmd_validate(args: argparse.Namespace) -> int:
    from defectflow.contracts import detect_schema, load_any, validate, validate_rows

    bad = 0
    for f in args.files:
        try:
            name = args.schema or detect_schema(f)
            data = load_any(f)
            if isinstance(data, list):
                validate_rows(name, data, where=str(f))
            else:
                validate(name, data, where=str(f))
            print(f"ok      {f} ({name})")
        except DefectflowError as exc:
            bad += 1
            print(f"INVALID {f}: {exc}")
        except (OSError, ValueError) as exc:
            bad += 1
            print(f"INVALID {f}: cannot read: {exc}")
    return EXIT_ERRORS if bad else EXIT_OK


def cmd_schemas(args: argparse.Namespace) -> int:
    from defectflow.contracts import write_schemas

    for p in write_schemas(args.out):
        print(p)
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    from defectflow.codes import codes_markdown
    from defectflow.config import update_reference
    from defectflow.contracts import write_schemas

    write_schemas(args.root / "schemas")
    (args.root / "docs" / "preflight_codes.md").write_text(codes_markdown(), encoding="utf-8")
    update_reference(args.root / "config" / "README.md")
    print("schemas/, docs/preflight_codes.md and config/README.md regenerated")
    return EXIT_OK


def cmd_codes(args: argparse.Namespace) -> int:
    from defectflow.codes import codes_markdown

    print(codes_markdown(), end="")
    return EXIT_OK


def cmd_demo_data(args: argparse.Namespace) -> int:
    from defectflow.data.demo import generate_demo

    counts = generate_demo(args.out)
    print(f"demo data written to {args.out}: {counts}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="defectflow", description="From product images to a deployable anomaly detector."
    )
    p.add_argument("--version", action="version", version=f"defectflow {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "preflight",
        help="check a manifest or image folder (data gate); exit 0 ok, 2 errors, 1 internal failure",
    )
    s.add_argument(
        "path", help="manifest (JSONL/CSV/Parquet), MVTec folder, or good/ + defect folders"
    )
    s.add_argument("--json", type=Path, help="write the JSON report here")
    s.add_argument(
        "--config",
        type=Path,
        help="take the `preflight:` section (ignore/severity/...) from this config",
    )
    s.add_argument(
        "--verify",
        choices=["header", "full"],
        help="header reads only, or decode every file (default: config, full)",
    )
    s.add_argument("--category", help="category for records that have none")
    s.add_argument("--dataset", default="cli", help="dataset name in the report")
    s.add_argument("--threads", type=int, default=0, help="processes for decoding (0 = all cores)")
    s.add_argument("--examples", type=int, default=3, help="examples printed per issue code")
    s.set_defaults(func=cmd_preflight)

    s = sub.add_parser(
        "similar", help="the stored images nearest to an image, by the stored embeddings"
    )
    s.add_argument("image", type=Path, help="query image")
    s.add_argument("--dataset", required=True, help="dataset name (results/DATASET)")
    s.add_argument("--category", help="search this category only (default: all)")
    s.add_argument("-k", type=int, default=10, help="how many (default 10)")
    s.add_argument(
        "--backbone",
        help="whose embeddings (a folder of results/DATASET/embeddings; needed after a backbone sweep)",
    )
    s.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_similar)

    s = sub.add_parser("runs", help="the run registry: list runs, show one, diff two")
    s.add_argument("action", choices=["list", "show", "diff"])
    s.add_argument("runs", nargs="*", help="run ids (or a unique prefix, latest, previous)")
    s.add_argument("--registry", type=Path, default=Path("runs/registry.parquet"))
    s.add_argument("--json", action="store_true", help="JSON instead of text")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser(
        "gate",
        help="exit 1 when a metric dropped against a baseline run or leaderboard file (a CI step)",
    )
    s.add_argument(
        "--baseline",
        required=True,
        help="run id (prefix, latest, previous) or a leaderboard .parquet/.csv",
    )
    s.add_argument("--current", default="latest", help="run to check (default: the latest)")
    s.add_argument("--metric", default="image_auroc")
    s.add_argument("--max-drop", type=float, default=0.01, help="tolerated drop (default 0.01)")
    s.add_argument("--registry", type=Path, default=Path("runs/registry.parquet"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_gate)

    s = sub.add_parser(
        "review",
        help="push review tasks to Label Studio / pull the annotations as corrections "
        "(LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)",
    )
    s.add_argument("action", choices=["push", "pull"])
    s.add_argument("--dataset", required=True)
    s.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    s.add_argument(
        "--out", type=Path, help="pull: corrections file (default corrections/DATASET.jsonl)"
    )
    s.set_defaults(func=cmd_review)

    s = sub.add_parser(
        "app", help="open the FiftyOne App on a dataset built by `snakemake fiftyone`"
    )
    s.add_argument("dataset", help="dataset name (results/DATASET)")
    s.add_argument("--port", type=int, default=5151)
    s.add_argument("--address", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    s.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    s.set_defaults(func=cmd_app)

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
        type=Path,
        default=Path("predictions.jsonl"),
        help="predictions JSONL, or a folder to write predictions.jsonl into (default: predictions.jsonl)",
    )
    s.add_argument("--maps", type=Path, help="write PNG heatmaps into this folder")
    s.add_argument("--category", help="refuse to run if the model is of another category")
    s.add_argument("--batch-size", type=_positive, default=16)
    s.add_argument("--threads", type=_positive, default=2, help="backbone threads")
    s.add_argument(
        "--device",
        default="cpu",
        choices=["auto", "cpu", "cuda"],
        help="where the backbone and nearest-neighbour search run (default cpu)",
    )
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser(
        "seal",
        help="accept a hand-edited infer_config.json (e.g. a new threshold): record its digest, giving the model a new id",
    )
    s.add_argument("files", nargs="+", type=Path)
    s.set_defaults(func=cmd_seal)

    s = sub.add_parser("validate", help="validate artifacts against their JSON Schemas")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--schema", help="schema name (default: from the file name)")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("schemas", help="write every artifact's JSON Schema")
    s.add_argument("--out", type=Path, default=Path("schemas"))
    s.set_defaults(func=cmd_schemas)

    s = sub.add_parser(
        "docs",
        help="regenerate schemas/, docs/preflight_codes.md and config/README.md (developers)",
    )
    s.add_argument("--root", type=Path, default=Path("."))
    s.set_defaults(func=cmd_docs)

    s = sub.add_parser("codes", help="print the preflight issue codes as Markdown")
    s.set_defaults(func=cmd_codes)

    s = sub.add_parser("demo-data", help="generate the built-in demo dataset")
    s.add_argument("out", type=Path)
    s.set_defaults(func=cmd_demo_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except DefectflowError as exc:
        print(f"defectflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a path of the user's the system refuses (a folder for a file, ...)
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"defectflow {args.command}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERRORS
    except Exception:
        log.exception("internal error (a bug in defectflow; please report it with this output)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
