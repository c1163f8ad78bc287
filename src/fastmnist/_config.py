"""Environment knobs and thread control.

- ``FASTMNIST_CACHE=0`` turns off Numba's on-disk kernel cache (on by default; Numba writes
  it beside the sources, or in the user cache directory where that is not writable).
- ``FASTMNIST_FASTMATH=0`` compiles kernels without fast-math flags (exact IEEE order).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numba
from threadpoolctl import ThreadpoolController

CACHE = os.environ.get("FASTMNIST_CACHE", "1") != "0"

# Fast-math *without* nnan and ninf: with them LLVM may assume no NaN/inf exists, so isnan()
# folds to False and a diverging model trains on silently. Kept: "nsz" (ignore the sign of
# zero) and "afn" (faster exp/log/tanh). Left out on purpose: "reassoc", "contract" and
# "arcp", which let a parallel kernel and its serial twin -- or a fresh build and one loaded
# from Numba's cache (numba#10617) -- vectorise reductions, fuse multiply-adds or use
# reciprocals differently, and so round differently in the last bit. The heavy products run
# in BLAS, so the loops they would have sped up are the cheap ones.
FASTMATH = {"nsz", "afn"} if os.environ.get("FASTMNIST_FASTMATH", "1") != "0" else False


def effective_n_jobs(n_jobs: int | None) -> int:
    """Threads for ``n_jobs``, scikit-learn style, capped at Numba's pool size.

    ``None`` and ``-1`` mean every thread Numba has (``NUMBA_NUM_THREADS``, by default the
    number of cores); ``-2`` all but one; a positive number that many (at most the pool).
    """
    most = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return most
    if not isinstance(n_jobs, (int,)) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer or None, got {n_jobs!r}")
    n = n_jobs if n_jobs > 0 else most + 1 + n_jobs
    return max(1, min(n, most))


@contextmanager
def threads(n_jobs: int | None) -> Iterator[int]:
    """Run the block with ``n_jobs`` Numba (and OpenMP) threads and single-threaded BLAS.

    BLAS stays on one thread because OpenBLAS's results depend on its thread count (its
    ``x.T @ dy`` differs in the last bits between 1 and 2 threads), which would break the
    promise that a ``random_state`` gives the same weights at any ``n_jobs``. Parallelism
    comes from fastmnist's own kernels, over fixed partitions of their outputs.

    Both settings are restored on exit, also when the block raises. Numba's setting is per
    calling thread, so worker threads (GridSearchCV's threading backend) do not disturb
    each other.
    """
    n = effective_n_jobs(n_jobs)
    previous = numba.get_num_threads()
    with _controller().limit(limits={"blas": 1, "openmp": n}):
        numba.set_num_threads(n)
        try:
            yield n
        finally:
            numba.set_num_threads(previous)


@functools.cache
def _controller() -> ThreadpoolController:
    # threadpoolctl finds the loaded BLAS and OpenMP libraries by reading the process's
    # memory map: 2.4 ms, more than predicting one image takes. Found once, on first use:
    # the ones that matter (NumPy's and SciPy's BLAS, the OpenMP runtime of fastmnist's
    # Cython loaders) are loaded with fastmnist; Numba's threads are set through Numba.
    return ThreadpoolController()
