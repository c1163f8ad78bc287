"""Kernel benchmarks at the reference models' shapes, side by side with NumPy and PyTorch.

Run: ``pytest bench/test_bench_kernels.py --benchmark-json=.benchmarks/kernels.json`` then
``python bench/ratios.py .benchmarks/kernels.json``. Each benchmark is one forward and
backward pass (or one optimizer step); every framework runs on 2 threads.
"""

import numpy as np
import pytest
from numba import prange
from threadpoolctl import threadpool_limits

from fastmnist._kernels import activation, dense, loss
from fastmnist._kernels._jit import parallel_kernel

IMPLS = ["fastmnist", "numpy", "torch"]


@parallel_kernel
def dense_loops(y, dx, dW, db, x, W, b, dy):
    # The alternative to BLAS that dense.py was measured against: prange loop nests, each
    # thread owning rows of its output, inner loops vectorised over contiguous columns.
    B, K = x.shape
    N = W.shape[1]
    for i in prange(B):
        for j in range(N):
            y[i, j] = b[j]
        for k in range(K):
            for j in range(N):
                y[i, j] += x[i, k] * W[k, j]
    for k in prange(K):
        for j in range(N):
            dW[k, j] = 0
        for i in range(B):
            for j in range(N):
                dW[k, j] += x[i, k] * dy[i, j]
    for j in range(N):
        db[j] = 0
    for i in range(B):
        for j in range(N):
            db[j] += dy[i, j]
    for i in prange(B):
        for k in range(K):
            total = 0.0
            for j in range(N):
                total += dy[i, j] * W[k, j]
            dx[i, k] = total


def run(benchmark, impl, flops, function, *args):
    benchmark.extra_info["impl"] = impl
    if flops:
        benchmark.extra_info["flops"] = flops
    return benchmark(function, *args)


def arrays(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


@pytest.mark.parametrize("B, K, N", [(32, 784, 128), (128, 784, 128), (256, 784, 128),
                                     (32, 128, 64)])
@pytest.mark.parametrize("impl", [*IMPLS, "loops"])
def test_dense(benchmark, request, impl, B, K, N):
    benchmark.group = f"dense {K}->{N}, batch {B}, forward+backward"
    x, W, b, dy = arrays((B, K), (K, N), N, (B, N))
    flops = 3 * 2 * B * K * N
    if impl == "fastmnist":
        request.getfixturevalue("fastmnist_threads")
        y, dx, dW, db = (np.empty_like(dy), np.empty_like(x), np.empty_like(W),
                         np.empty_like(b))

        def step():
            dense.dense_forward(y, x, W, b)
            dense.dense_backward(dx, dW, db, dy, x, W, True)

        run(benchmark, impl, flops, step)
    elif impl == "loops":
        request.getfixturevalue("fastmnist_threads")
        outputs = (np.empty_like(dy), np.empty_like(x), np.empty_like(W), np.empty_like(b))
        run(benchmark, impl, flops, dense_loops, *outputs, x, W, b, dy)
    elif impl == "numpy":
        def step():
            return x @ W + b, x.T @ dy, dy.sum(axis=0), dy @ W.T

        with threadpool_limits(2, user_api="blas"):
            run(benchmark, impl, flops, step)
    else:
        torch = request.getfixturevalue("torch_module")
        tx, tW, tb = (torch.from_numpy(a).requires_grad_() for a in (x, W, b))
        tdy = torch.from_numpy(dy)

        def step():
            tx.grad = tW.grad = tb.grad = None
            torch.addmm(tb, tx, tW).backward(tdy)

        run(benchmark, impl, flops, step)


@pytest.mark.parametrize("impl", IMPLS)
def test_relu(benchmark, request, impl):
    benchmark.group = "relu (128, 128), forward+backward"
    x, dy = arrays((128, 128), (128, 128))
    if impl == "fastmnist":
        request.getfixturevalue("fastmnist_threads")
        y, dx = np.empty_like(x), np.empty_like(x)

        def step():
            activation.activation_forward(y, x, activation.RELU)
            activation.activation_backward(dx, dy, y, activation.RELU)

        run(benchmark, impl, 0, step)
    elif impl == "numpy":
        run(benchmark, impl, 0, lambda: (np.maximum(x, 0), dy * (x > 0)))
    else:
        torch = request.getfixturevalue("torch_module")
        tx, tdy = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

        def step():
            tx.grad = None
            torch.relu(tx).backward(tdy)

        run(benchmark, impl, 0, step)


@pytest.mark.parametrize("B", [32, 128])
@pytest.mark.parametrize("impl", IMPLS)
def test_softmax_cross_entropy(benchmark, request, impl, B):
    benchmark.group = f"softmax cross-entropy ({B}, 10), loss+gradient"
    (logits,) = arrays((B, 10))
    labels = np.random.default_rng(1).integers(0, 10, B)
    if impl == "fastmnist":
        request.getfixturevalue("fastmnist_threads")
        dlogits, row_loss, weights = np.empty_like(logits), np.empty(B, np.float32), \
            np.ones(B, np.float32)
        run(benchmark, impl, 0, loss.softmax_cross_entropy, dlogits, row_loss, logits,
            labels, weights)
    elif impl == "numpy":
        def step():
            z = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(z)
            p = e / e.sum(axis=1, keepdims=True)
            value = -np.log(p[np.arange(B), labels]).mean()
            p[np.arange(B), labels] -= 1
            return value, p / B

        run(benchmark, impl, 0, step)
    else:
        torch = request.getfixturevalue("torch_module")
        tz, ty = torch.from_numpy(logits).requires_grad_(), torch.from_numpy(labels)

        def step():
            tz.grad = None
            torch.nn.functional.cross_entropy(tz, ty).backward()

        run(benchmark, impl, 0, step)
