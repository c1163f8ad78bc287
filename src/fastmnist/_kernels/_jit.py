"""The decorators every kernel is compiled with.

- Lazy: no type signatures, so importing fastmnist compiles nothing; each kernel compiles on
  its first call for the dtypes it meets (float32 for training, float64 for gradient checks).
- Cached on disk (``FASTMNIST_CACHE``) under names that change with any kernel module's
  source, fast-math without ``nnan``/``ninf`` (``_config``).
- ``nogil``: kernels release the GIL, so threads calling them run truly in parallel.
- ``parallel_kernel`` also compiles a serial twin of the same Python function. The twin is
  used from worker threads when Numba's threading layer is not thread-safe ("workqueue",
  the fallback when neither OpenMP nor TBB can be loaded): concurrent launches on that layer
  abort the process.
- A parallel kernel's twins drop the LLVM IR Numba keeps beside their machine code
  (``_drop_linking_ir``): 3 to 9 MB for each large kernel, 15 MB of a CNN fit's peak.
"""

from __future__ import annotations

import hashlib
import threading
import types
from pathlib import Path

import numba

from .._config import CACHE, FASTMATH

_OPTIONS = dict(cache=CACHE, fastmath=FASTMATH, nogil=True, error_model="numpy")


def sources_digest(folder: Path) -> str:
    """A short hash of the source of every module in ``folder``.

    Numba checks a cached kernel against its own file only: a kernel whose callee changed in
    another file (conv's products after an edit of gemm.py) would load its stale build.
    """
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# Numba's disk cache keys a kernel by its qualified name (and its own file); the suffix puts
# what else decides the build into that name: every kernel module's source, and fastmath
# (which Numba's key ignores).
_CACHE_SUFFIX = f"_{sources_digest(Path(__file__).parent)}" + ("" if FASTMATH else "_exact")

# Threading layers that tolerate parallel launches from several threads at once.
_THREADSAFE_LAYERS = {"omp", "tbb"}


def kernel(function):
    """A serial kernel: ``numba.njit`` with fastmnist's options."""
    return numba.njit(**_OPTIONS)(_renamed_copy(function, _CACHE_SUFFIX))


def inlined_kernel(function):
    """A serial kernel that Numba inlines into its callers before LLVM optimises them.

    For the bodies of hot loops: once inlined, LLVM sees where the arrays come from and
    vectorises the loop without the fallbacks it keeps for a separately compiled function
    (measured 2.5x on gemm's 8 x 4 update at 121 columns).
    """
    return numba.njit(inline="always", **_OPTIONS)(_renamed_copy(function, _CACHE_SUFFIX))


class ParallelKernel:
    """A ``prange`` kernel and its serial twin; calls go to whichever is safe.

    ``parallel`` and ``serial`` are plain Numba dispatchers, for Python code only: their
    builds keep no IR for a compiled caller to link (``_drop_linking_ir``).
    """

    def __init__(self, function, shares_one_image=None) -> None:
        self.py_func = function
        self.shares_one_image = shares_one_image
        self.parallel = numba.njit(parallel=True, **_OPTIONS)(
            _renamed_copy(function, _CACHE_SUFFIX))
        self.serial = numba.njit(parallel=False, **_OPTIONS)(
            _renamed_copy(function, _CACHE_SUFFIX + "_serial"))
        for twin in (self.parallel, self.serial):
            _drop_linking_ir(twin)
        self.__name__ = function.__name__
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __call__(self, *args):
        if getattr(_local, "serial", False) and not (
                self.shares_one_image and _local.threads > 1 and self.shares_one_image(*args)):
            return self.serial(*args)
        if threading.current_thread() is threading.main_thread() or _layer_is_threadsafe():
            return self.parallel(*args)
        return self.serial(*args)

    def __repr__(self) -> str:
        return f"<parallel kernel {self.__name__}>"


def _renamed_copy(function, suffix):
    # Numba's disk cache keys a function by its qualified name and bytecode, not by the
    # ``parallel`` or ``fastmath`` options: without a distinct name both twins would load
    # whichever build was cached first (a "serial" twin running on every thread).
    twin = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    twin.__qualname__ = function.__qualname__ + suffix
    return twin


def _drop_linking_ir(dispatcher) -> None:
    """Free the optimised LLVM IR Numba keeps with each build of ``dispatcher``, once built.

    Numba keeps a build's IR (besides its machine code) so that other compiled functions
    calling it can link and inline it; parsed back from the disk cache it takes about ten
    times the cached size: 3 to 9 MB for each of the large kernels, 15 MB of a CNN fit's
    peak RSS (501 -> 486 MB). (A build compiled afresh also keeps its IR in its final
    module: only the copy made for the cache goes.) No compiled function ever calls a
    ``ParallelKernel``'s twins (only Python code does, through the kernel or its
    ``parallel``/``serial``), so no one links them; one that did would fail to compile
    ("library unfit for linking") once the build came from the cache. Numba's C dispatcher
    builds (or loads) a missing signature through the instance's ``_compile_for_args``;
    the IR goes as soon as that returns, before another kernel loads, so it never adds up
    at the peak.
    """
    compile_for_args = dispatcher._compile_for_args

    def compile_then_drop_ir(*args, **kwargs):
        try:
            return compile_for_args(*args, **kwargs)
        finally:
            for build in list(dispatcher.overloads.values()):
                build.library._shared_module = None

    dispatcher._compile_for_args = compile_then_drop_ir


def parallel_kernel(function=None, *, shares_one_image=None):
    """``@parallel_kernel``, or ``@parallel_kernel(shares_one_image=worth_it)`` for a kernel
    that may share even one image between threads (see ``serial_kernels``): worth_it(*args)
    says whether the call's work on an image outweighs a parallel launch."""
    if function is None:
        return lambda function: ParallelKernel(function, shares_one_image)
    return ParallelKernel(function, shares_one_image)


_local = threading.local()


class numba_threads:  # a context manager, named as contextlib's are
    """Numba's thread count for this thread is ``threads`` in this block.

    The setting is made, and undone, only where it differs: 0.8 us each way, of the ~25
    it takes to predict one image (reading it alone takes 0.6).
    """

    __slots__ = ("threads", "_previous")

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        self._previous = numba.get_num_threads()
        if self.threads != self._previous:
            numba.set_num_threads(self.threads)  # (raises if invalid, before any change)

    def __exit__(self, *exc_info) -> None:
        if self.threads != self._previous:
            numba.set_num_threads(self._previous)


class serial_kernels(numba_threads):
    """Parallel kernels called in this block (from this thread) run their serial twins.

    For work too small to share: a parallel launch costs microseconds of thread wake-up
    and barrier, more than most layers' forward pass of one image. The twins give the
    same bits. Kernels that share one image (``parallel_kernel``) still run in parallel
    where their call is worth it, ``threads`` > 1 and that is safe, on ``threads`` threads
    (Numba's setting in the block): cnn-keras's second Winograd convolution, 21 us of one
    image's prediction on one thread, 16 on two.

    A class rather than a ``contextlib.contextmanager`` generator: 1.1 us a block, not 1.7
    (predicting one image takes ~30).
    """

    __slots__ = ("_was",)

    def __enter__(self) -> None:
        self._was = getattr(_local, "serial", False), getattr(_local, "threads", 1)
        super().__enter__()
        _local.serial, _local.threads = True, self.threads

    def __exit__(self, *exc_info) -> None:
        _local.serial, _local.threads = self._was
        super().__exit__(*exc_info)


def _layer_is_threadsafe() -> bool:
    try:
        return numba.threading_layer() in _THREADSAFE_LAYERS
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return False
