"""The decorators every kernel is compiled with.

- Lazy: no type signatures, so importing fastmnist compiles nothing; each kernel compiles on
  its first call for the dtypes it meets (float32 for training, float64 for gradient checks).
- Cached on disk (``FASTMNIST_CACHE``), fast-math without ``nnan``/``ninf`` (``_config``).
- ``nogil``: kernels release the GIL, so threads calling them run truly in parallel.
- ``parallel_kernel`` also compiles a serial twin of the same Python function. The twin is
  used from worker threads when Numba's threading layer is not thread-safe ("workqueue",
  the fallback when neither OpenMP nor TBB can be loaded): concurrent launches on that layer
  abort the process.
"""

from __future__ import annotations

import threading

import numba

from .._config import CACHE, FASTMATH

_OPTIONS = dict(cache=CACHE, fastmath=FASTMATH, nogil=True, error_model="numpy")

# Threading layers that tolerate parallel launches from several threads at once.
_THREADSAFE_LAYERS = {"omp", "tbb"}


def kernel(function):
    """A serial kernel: ``numba.njit`` with fastmnist's options."""
    return numba.njit(**_OPTIONS)(function)


class ParallelKernel:
    """A ``prange`` kernel and its serial twin; calls go to whichever is safe.

    ``parallel`` and ``serial`` are plain Numba dispatchers, callable from other kernels.
    """

    def __init__(self, function) -> None:
        self.py_func = function
        self.parallel = numba.njit(parallel=True, **_OPTIONS)(function)
        self.serial = numba.njit(parallel=False, **_OPTIONS)(function)
        self.__name__ = function.__name__
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __call__(self, *args):
        if threading.current_thread() is threading.main_thread() or _layer_is_threadsafe():
            return self.parallel(*args)
        return self.serial(*args)

    def __repr__(self) -> str:
        return f"<parallel kernel {self.__name__}>"


def parallel_kernel(function) -> ParallelKernel:
    return ParallelKernel(function)


def _layer_is_threadsafe() -> bool:
    try:
        return numba.threading_layer() in _THREADSAFE_LAYERS
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return False
