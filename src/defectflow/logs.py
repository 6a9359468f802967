"""Logging set-up for Snakemake adapters and the CLI."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from defectflow.errors import DefectflowError

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@contextlib.contextmanager
def log_to(path: str | Path | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send defectflow logs to ``path`` (the rule's log) and to stderr for the block's duration.

    A :class:`DefectflowError` raised inside the block is written to the log and to stderr as a
    readable message (no traceback) and ends the process with exit status 1, so Snakemake marks
    the job failed and shows why. Any other exception keeps its traceback: it is a bug.
    """
    root = logging.getLogger("defectflow")
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w", encoding="utf-8"))
    fmt = logging.Formatter(_FORMAT, datefmt="%H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    try:
        yield root
    except DefectflowError as exc:
        root.error("%s: %s", type(exc).__name__, exc)
        for h in handlers:
            h.flush()
        raise SystemExit(1) from None
    except Exception:
        root.exception("internal error (a bug in defectflow; please report it with this log)")
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
