"""Logging set-up for Snakemake adapters and the CLI."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from defectflow.errors import DefectflowError

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _proc(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a process, from /proc; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return int(fields[1]), fields[0], fields[19]


def _snakemake_ancestor() -> tuple[int, str] | None:
    """The Snakemake process that runs this job (pid and start time), if it is an ancestor."""

    pid = os.getppid()
    for _ in range(8):
        info = _proc(pid)
        if info is None or pid <= 1:
            return None
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"snakemake" in cmd and b".snakemake/scripts/" not in cmd:
            return pid, info[2]
        pid = info[0]
    return None


def stop_with_snakemake(poll: float = 0.5) -> None:
    """End this job when the Snakemake that started it is killed (``kill -9`` of Snakemake
    alone leaves its jobs running; one finishing after it would leave outputs Snakemake never
    recorded, which the rerun reports as missing metadata). Outputs are written atomically, so
    stopping leaves nothing half-written; the rerun does the job again."""

    ancestor = _snakemake_ancestor()
    if ancestor is None:  # not under a local Snakemake (a test, the CLI)
        return
    pid, started = ancestor

    def watch() -> None:
        while True:
            time.sleep(poll)
            info = _proc(pid)
            if info is None or info[1] == "Z" or info[2] != started:
                logging.getLogger("defectflow").error(
                    "Snakemake (pid %d) is gone: stopping this job; run the same command again", pid
                )
                os._exit(1)

    threading.Thread(target=watch, name="stop-with-snakemake", daemon=True).start()


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
    if path:  # a Snakemake job
        stop_with_snakemake()
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
