"""The ``defectflow`` command: the parts users run outside Snakemake, one module a group of
commands (:mod:`.data`, :mod:`.deploy`, :mod:`.line`, :mod:`.evaluation`, :mod:`.curation`), each with its
``register`` of subcommands."""

from __future__ import annotations

import argparse
import logging
import sys

from defectflow import __version__
from defectflow.cli import curation, data, deploy, evaluation, line
from defectflow.cli.common import EXIT_ERRORS, EXIT_INTERNAL
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="defectflow", description="From product images to a deployable anomaly detector."
    )
    p.add_argument("--version", action="version", version=f"defectflow {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (data, deploy, line, evaluation, curation):
        group.register(sub)
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
