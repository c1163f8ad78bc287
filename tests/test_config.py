"""Thread control, worker-thread safety, caching switch and warm-up of the kernels."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fastmnist._config import CACHE, effective_n_jobs, threads
from fastmnist._kernels import _jit, dense, gemm, winograd


def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_effective_n_jobs():
    most = numba.config.NUMBA_NUM_THREADS
    assert effective_n_jobs(None) == most
    assert effective_n_jobs(-1) == most
    assert effective_n_jobs(1) == 1
    assert effective_n_jobs(10_000) == most
    assert effective_n_jobs(-most - 5) == 1
    for bad in (0, 1.5, "2", True):
        with pytest.raises(ValueError, match="n_jobs"):
            effective_n_jobs(bad)


def test_threads_sets_and_restores_even_on_error():
    before_numba, before_blas = numba.get_num_threads(), blas_threads()
    with threads(1) as n:
        assert n == 1 and numba.get_num_threads() == 1
        assert all(t == 1 for t in blas_threads())
    assert numba.get_num_threads() == before_numba and blas_threads() == before_blas
    with pytest.raises(RuntimeError, match="boom"), threads(1):
        raise RuntimeError("boom")
    assert numba.get_num_threads() == before_numba and blas_threads() == before_blas


def dense_once(seed):
    rng = np.random.default_rng(seed)
    x, W, b = (rng.standard_normal(s).astype(np.float32) for s in ((64, 50), (50, 30), 30))
    y = np.empty((64, 30), np.float32)
    with threads(2):
        dense.dense_forward(y, x, W, b)
    return y


def test_kernels_from_worker_threads_do_not_crash_and_agree():
    # What GridSearchCV's threading backend does: several threads call kernels at once.
    expected = [dense_once(seed) for seed in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(dense_once, range(8)))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_serial_twin_is_used_off_the_main_thread_on_an_unsafe_layer(monkeypatch):
    calls = []
    kernel = dense.dense_forward
    monkeypatch.setattr(_jit, "_layer_is_threadsafe", lambda: False)
    monkeypatch.setattr(kernel, "serial",
                        lambda *args: calls.append(threading.current_thread().name))
    dense_once(0)  # main thread: the parallel kernel, whatever the layer
    assert calls == []
    thread = threading.Thread(target=dense_once, args=(0,), name="worker")
    thread.start()
    thread.join()
    assert calls == ["worker"]


@pytest.mark.skipif(not CACHE, reason="without the disk cache Numba makes no copy to drop")
def test_parallel_twins_drop_their_linking_ir_and_plain_kernels_keep_it():
    # The twins' IR goes once built (memory: no compiled code links a ParallelKernel)...
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x, W, b = (rng.standard_normal(s).astype(dtype) for s in ((5, 4), (4, 3), 3))
        for run in (dense.dense_forward, dense.dense_forward.serial):
            y = np.empty((5, 3), dtype)
            run(y, x, W, b)
            np.testing.assert_allclose(y, x @ W + b, rtol=1e-5)
    for twin in (dense.dense_forward.parallel, dense.dense_forward.serial):
        builds = list(twin.overloads.values())
        assert len(builds) >= 2
        assert all(build.library._shared_module is None for build in builds)

    # ... while a plain kernel's stays, for the compiled functions that call it.
    @numba.njit
    def product(c, a, b):
        gemm.matmul(c, a, b)

    a = rng.standard_normal((6, 5)).astype(np.float32)
    c = np.empty((6, 6), np.float32)
    gemm.matmul(c, a, a.T.copy())
    product(c, a, a.T.copy())
    np.testing.assert_allclose(c, a @ a.T, rtol=1e-5)
    assert all(build.library._shared_module is not None
               for build in gemm.matmul.overloads.values())


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread: nothing to share")
def test_serial_kernels_leave_the_threads_to_the_kernels_that_share_one_image(monkeypatch):
    calls = []
    for kernel in (dense.dense_forward, winograd.conv2d_relu_pool_winograd):
        for twin in ("parallel", "serial"):
            monkeypatch.setattr(kernel, twin, lambda *args, name=f"{kernel.__name__} {twin}":
                                calls.append((name, numba.get_num_threads())))
    # Winograd shares an image with several channels, not one channel's outer products
    one_channel, channels = np.empty((1, 1, 6, 6)), np.empty((1, 3, 6, 6))
    before = numba.get_num_threads()
    for n in (1, 2):
        with _jit.serial_kernels(n):
            dense.dense_forward()
            winograd.conv2d_relu_pool_winograd(None, one_channel)
            winograd.conv2d_relu_pool_winograd(None, channels)
        assert numba.get_num_threads() == before
    winograd_call = "conv2d_relu_pool_winograd"
    assert calls == [("dense_forward serial", 1), (f"{winograd_call} serial", 1),
                     (f"{winograd_call} serial", 1), ("dense_forward serial", 2),
                     (f"{winograd_call} serial", 2), (f"{winograd_call} parallel", 2)]


def test_numba_threads_sets_numbas_count_in_its_block_only():
    before = numba.get_num_threads()
    with _jit.numba_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="number of threads"):
        with _jit.numba_threads(numba.config.NUMBA_NUM_THREADS + 1):
            pass
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("setting, cache_class", [("1", "FunctionCache"), ("0", "NullCache")])
def test_cache_switch(setting, cache_class, fresh_python):
    code = ("from fastmnist._kernels import dense; "
            "print(type(dense.dense_forward.parallel._cache).__name__)")
    assert fresh_python(code, FASTMNIST_CACHE=setting).strip() == cache_class


def test_cached_kernels_are_named_after_every_kernel_source(tmp_path):
    # A kernel's cache entry must go stale when a callee in another module changes.
    (tmp_path / "gemm.py").write_text("def matmul(): return 1\n")
    (tmp_path / "conv.py").write_text("def conv(): return matmul()\n")
    before = _jit.sources_digest(tmp_path)
    (tmp_path / "gemm.py").write_text("def matmul(): return 2\n")
    assert _jit.sources_digest(tmp_path) != before
    (tmp_path / "gemm.py").write_text("def matmul(): return 1\n")
    assert _jit.sources_digest(tmp_path) == before
    kernels = Path(_jit.__file__).parent
    suffix = "_" + _jit.sources_digest(kernels)
    assert dense.dense_forward.parallel.py_func.__qualname__.startswith("dense_forward" + suffix)
    assert dense.dense_forward.serial.py_func.__qualname__.endswith(suffix + "_serial")


def test_fastmath_keeps_nan_checks(fresh_python):
    code = "from fastmnist._config import FASTMATH; print(sorted(FASTMATH or []))"
    for setting, expected in (("1", "['afn', 'nsz']"), ("0", "[]")):
        assert fresh_python(code, FASTMNIST_FASTMATH=setting).strip() == expected


def test_the_package_loads_its_public_names_on_first_use(fresh_python):
    code = ("import sys, fastmnist\n"
            "before = 'sklearn' in sys.modules or 'numba' in sys.modules\n"
            "from fastmnist import MLPClassifier, load_mnist\n"
            "print(before, 'sklearn' in sys.modules, 'numba' in sys.modules,\n"
            "      MLPClassifier.__module__, load_mnist.__module__,\n"
            "      'CNNClassifier' in dir(fastmnist), fastmnist.__version__)")
    assert fresh_python(code).split() == ["False", "True", "True", "fastmnist._mlp",
                                          "fastmnist.datasets._mnist", "True", "0.1.0"]
    import fastmnist

    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        fastmnist.Nope  # noqa: B018
