"""Thread counts, set deliberately in one place for every job (BLAS/OpenMP, numba, torch,
onnxruntime take theirs from here). A loop of small ops on two OpenMP threads collapses when the
other core is busy, so jobs use what Snakemake gave them and no more."""

from __future__ import annotations

import os
import sys

from threadpoolctl import threadpool_limits


def set_threads(n: int) -> None:
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)

    threadpool_limits(n)
    if "torch" in sys.modules:
        # lazy: torch (seconds to import) only where a network runs or is exported
        import torch

        torch.set_num_threads(n)
