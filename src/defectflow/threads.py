"""Thread counts, set deliberately in one place for every job (BLAS/OpenMP, numba, torch,
onnxruntime take theirs from here). A loop of small ops on two OpenMP threads collapses when the
other core is busy, so jobs use what Snakemake gave them and no more."""

from __future__ import annotations

import os
import sys

from threadpoolctl import threadpool_limits


def set_threads(n: int) -> None:
    global _WORKERS
    n = max(1, int(n))
    _WORKERS = n
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)

    threadpool_limits(n)
    if "torch" in sys.modules:
        # lazy: torch (seconds to import) only where a network runs or is exported
        import torch

        torch.set_num_threads(n)


_WORKERS: int | None = None
_POOL = None


def workers() -> int:
    """The threads a job may use (what :func:`set_threads` was given; else the cores)."""
    return _WORKERS or os.cpu_count() or 1


def parallel_map(fn, items: list) -> list:
    """``[fn(x) for x in items]``, run on :func:`workers` threads (numpy releases the GIL in
    BLAS). Callers split work into parts fixed by the data, never by the thread count, so a
    result is the same however many threads run it."""
    global _POOL
    n = min(workers(), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    if _POOL is None or _POOL._max_workers < n:
        # lazy: a pool only where parallel work is asked for
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(n, thread_name_prefix="defectflow-part")
    return list(_POOL.map(fn, items))


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena and keeps what is freed in
    it: a long-running process whose work moves between many threads (a service's thread pool)
    grows by tens of MB per thread. ``n`` arenas in all (``MALLOC_ARENA_MAX``); a no-op where
    the C library is not glibc."""
    # lazy: ctypes only in the long-running commands that call this
    import ctypes
    import ctypes.util

    m_arena_max = -8  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_arena_max, n)
    except (OSError, AttributeError):
        pass
