"""`defectflow similar`, `app` and `review`: looking at the data and correcting labels."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path

from defectflow.cli.common import EXIT_OK
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow")


def cmd_similar(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.curation.similar import find_similar

    hits = find_similar(
        args.image,
        args.dataset,
        args.results,
        category=args.category,
        k=args.k,
        backbone=args.backbone,
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
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.curation.fiftyone import database, database_dir

    db = database_dir(args.results, args.dataset)
    if not db.is_dir():
        raise DefectflowError(
            f"no FiftyOne database for dataset {args.dataset!r} at {db}; build it with "
            "`snakemake fiftyone` (or export: {fiftyone: true} in the config)"
        )
    with database(db):
        # lazy: fiftyone (an optional extra; it connects to its database) only for curation
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
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
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


def register(sub: argparse._SubParsersAction) -> None:
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
