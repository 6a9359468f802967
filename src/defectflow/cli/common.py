"""Exit statuses and checks every command shares."""

from __future__ import annotations

from pathlib import Path

from defectflow.errors import DefectflowError

EXIT_OK, EXIT_INTERNAL, EXIT_ERRORS = 0, 1, 2


def refuse_overwriting_inputs(outputs: dict[str, Path | None], inputs: list[Path]) -> None:
    """Refuse, before any work, an output that is one of the inputs or lies inside a folder
    being read (a heatmap or predictions file there would be read as an input next time, or
    overwrite one now), naming both."""
    for what, out in outputs.items():
        if out is None:
            continue
        o = Path(out).resolve()
        for i in inputs:
            r = Path(i).resolve()
            if o == r or (r.is_dir() and r in o.parents):
                verb = "overwrite" if o == r and not r.is_dir() else "write into"
                raise DefectflowError(
                    f"{what} {out} would {verb} the input {i}; write the output elsewhere "
                    "(nothing was written)"
                )
