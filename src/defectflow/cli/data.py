"""`defectflow preflight`, `validate`, `schemas`, `docs`, `codes`, `demo-data`: the data gate and the contracts."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from defectflow.cli.common import EXIT_ERRORS, EXIT_OK, refuse_overwriting_inputs
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow")


def cmd_preflight(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.config import DatasetConfig, PreflightConfig, load_config
    from defectflow.data.ingest import ingest_sources
    from defectflow.data.preflight import preflight_records
    from defectflow.data.preflight_report import (
        format_summary,
        unreadable_manifest_report,
        write_report,
    )
    from defectflow.data.sources import guess as guess_sources
    from defectflow.errors import ConfigError, ManifestError

    if args.json:  # before any work: the report never overwrites what it reads
        refuse_overwriting_inputs(
            {"--json": args.json}, [Path(args.path), *([args.config] if args.config else [])]
        )
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


def cmd_validate(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.artifact_files import detect_schema, load_any
    from defectflow.contracts import validate, validate_rows

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
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.contracts import write_schemas

    for p in write_schemas(args.out):
        print(p)
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.codes import codes_markdown
    from defectflow.config import update_reference
    from defectflow.contracts import write_schemas

    write_schemas(args.root / "schemas")
    (args.root / "docs" / "preflight_codes.md").write_text(codes_markdown(), encoding="utf-8")
    update_reference(args.root / "config" / "README.md")
    print("schemas/, docs/preflight_codes.md and config/README.md regenerated")
    return EXIT_OK


def cmd_codes(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.codes import codes_markdown

    print(codes_markdown(), end="")
    return EXIT_OK


def cmd_demo_data(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.data.demo import generate_demo

    counts = generate_demo(args.out)
    print(f"demo data written to {args.out}: {counts}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
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
