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


# --- convolution and pooling at the cnn-keras shapes (batch 128) ---------------------------

CONV_LAYERS = {  # name: (C, H, F, need_dx)
    "conv1 1->32 3x3 on 28x28 (no dx)": (1, 28, 32, False),
    "conv2 32->64 3x3 on 13x13": (32, 13, 64, True),
}


def conv_flops(B, C, H, F, K, need_dx):
    H_out = H - K + 1
    one_pass = 2 * B * F * H_out * H_out * C * K * K
    return one_pass * (3 if need_dx else 2)


@pytest.mark.parametrize("layer", list(CONV_LAYERS))
@pytest.mark.parametrize("impl", ["fastmnist", "torch"])
def test_conv2d(benchmark, request, impl, layer):
    C, H, F, need_dx = CONV_LAYERS[layer]
    B, K = 128, 3
    benchmark.group = f"{layer}, batch {B}, forward+backward"
    x, w, b, dy = arrays((B, C, H, H), (F, C, K, K), F, (B, F, H - K + 1, H - K + 1))
    flops = conv_flops(B, C, H, F, K, need_dx)
    if impl == "fastmnist":
        from fastmnist._kernels import conv

        request.getfixturevalue("fastmnist_threads")
        y, dx, dw, db = np.empty_like(dy), np.empty_like(x), np.empty_like(w), np.empty_like(b)
        work = np.empty(conv.conv2d_workspace_shape(B, C, F, K, 1, H - K + 1, H - K + 1),
                        np.float32)

        def step():
            conv.conv2d_forward(y, work, x, w, b, 1, 0, 0)
            conv.conv2d_backward(dx, dw, db, work, x, dy, w, 1, 0, 0, need_dx)

        run(benchmark, impl, flops, step)
    else:
        torch = request.getfixturevalue("torch_module")
        tx = torch.from_numpy(x).requires_grad_(need_dx)
        tw, tb = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
        tdy = torch.from_numpy(dy)

        def step():
            tx.grad = tw.grad = tb.grad = None
            torch.nn.functional.conv2d(tx, tw, tb).backward(tdy)

        run(benchmark, impl, flops, step)


@pytest.mark.parametrize("C, H", [(32, 26), (64, 11)])
@pytest.mark.parametrize("impl", ["fastmnist", "torch"])
def test_maxpool(benchmark, request, impl, C, H):
    B = 128
    benchmark.group = f"maxpool 2 on ({B}, {C}, {H}, {H}), forward+backward"
    x, dy = arrays((B, C, H, H), (B, C, H // 2, H // 2))
    if impl == "fastmnist":
        from fastmnist._kernels import pool

        request.getfixturevalue("fastmnist_threads")
        y, dx = np.empty_like(dy), np.empty_like(x)

        def step():
            pool.maxpool2d_forward(y, x, 2, 2)
            pool.maxpool2d_backward(dx, dy, x, y, 2, 2)

        run(benchmark, impl, 0, step)
    else:
        torch = request.getfixturevalue("torch_module")
        tx, tdy = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

        def step():
            tx.grad = None
            torch.nn.functional.max_pool2d(tx, 2).backward(tdy)

        run(benchmark, impl, 0, step)


@pytest.mark.parametrize("impl", ["fastmnist", "torch"])
def test_cnn_keras_conv_stack(benchmark, request, impl):
    # The issue-3 target: conv1 -> relu -> pool -> conv2 -> relu -> pool, forward and
    # backward at batch 128, against PyTorch's conv2d + autograd on the same shapes.
    benchmark.group = "cnn-keras conv stack (conv-relu-pool x2), batch 128, forward+backward"
    B = 128
    x, w1, b1, w2, b2 = arrays((B, 1, 28, 28), (32, 1, 3, 3), 32, (64, 32, 3, 3), 64)
    dy = arrays((B, 64, 5, 5), seed=1)[0]
    flops = conv_flops(B, 1, 28, 32, 3, False) + conv_flops(B, 32, 13, 64, 3, True)
    if impl == "fastmnist":
        from fastmnist._layers import Activation, Conv2D, MaxPool2D
        from fastmnist._network import Network

        request.getfixturevalue("fastmnist_threads")
        layers = [Conv2D(32, 3), Activation("relu"), MaxPool2D(2), Conv2D(64, 3),
                  Activation("relu"), MaxPool2D(2)]
        net = Network(layers, (1, 28, 28), "softmax")
        net.initialize(np.random.RandomState(0))
        net._reserve(B)

        def step():
            h = x
            for layer, ws in zip(net.layers, net._workspaces, strict=True):
                h = layer.forward(ws, h, True)
            d = dy.copy()
            for i in range(len(net.layers) - 1, -1, -1):
                d = net.layers[i].backward(net._workspaces[i], d, i > 0)

        run(benchmark, impl, flops, step)
    else:
        torch = request.getfixturevalue("torch_module")
        F = torch.nn.functional
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        params = [torch.from_numpy(a).requires_grad_() for a in (w1, b1, w2, b2)]

        def step():
            for p in params:
                p.grad = None
            h = F.max_pool2d(F.relu(F.conv2d(tx, params[0], params[1])), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, params[2], params[3])), 2)
            h.backward(tdy)

        run(benchmark, impl, flops, step)


@pytest.mark.parametrize("impl", ["fastmnist", "layers", "torch"])
def test_cnn_keras_one_image_prediction(benchmark, request, impl):
    # The 1-image latency target's path: cnn-keras's class probabilities for one image,
    # through fastmnist's one compiled call (ConvForward, as CNNClassifier.predict runs it),
    # its layers one by one from Python, and PyTorch's module under inference_mode.
    benchmark.group = "cnn-keras, one image's class probabilities"
    x = np.random.default_rng(0).random((1, 784), np.float32)
    if impl in ("fastmnist", "layers"):
        from fastmnist._fused import ConvForward
        from fastmnist._kernels._jit import serial_kernels
        from fastmnist._layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPool2D
        from fastmnist._network import Network

        threads = request.getfixturevalue("fastmnist_threads")
        layers = [Conv2D(32, 3), Activation("relu"), MaxPool2D(2), Conv2D(64, 3),
                  Activation("relu"), MaxPool2D(2), Flatten(), Dropout(0.5), Dense(10)]
        net = Network(layers, (1, 28, 28), "softmax")
        net.initialize(np.random.RandomState(0))
        forward, out = ConvForward(net), np.empty((1, 10), np.float32)

        def step():
            with serial_kernels(threads):
                if impl == "fastmnist":
                    forward.predict_proba(x, threads)
                else:
                    net.predict_proba(x.reshape(1, 1, 28, 28), out)

        step()  # loads the kernels and transforms the filters: not a timed round
        run(benchmark, impl, 0, step)
    else:
        torch = request.getfixturevalue("torch_module")
        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Dropout(0.5), nn.Linear(1600, 10), nn.Softmax(dim=1)).eval()
        tx = torch.from_numpy(x.reshape(1, 1, 28, 28))

        def step():
            with torch.inference_mode():
                model(tx)

        run(benchmark, impl, 0, step)


@pytest.mark.parametrize("impl", IMPLS)
def test_adam_step(benchmark, request, impl):
    benchmark.group = "Adam step over the 111,146 parameters of mlp-seed"
    theta, grad = arrays(111_146, 111_146)
    if impl == "fastmnist":
        from fastmnist._kernels import optim

        request.getfixturevalue("fastmnist_threads")
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        run(benchmark, impl, 0, optim.adam_step, theta, m, v, grad, 1e-3, 0.9, 0.999, 1e-8,
            10, 0.0, 0)
    elif impl == "numpy":
        m, v = np.zeros_like(theta), np.zeros_like(theta)

        def step():  # scikit-learn's AdamOptimizer, as NumPy expressions
            m[:] = 0.9 * m + 0.1 * grad
            v[:] = 0.999 * v + 0.001 * grad * grad
            theta[:] -= 1e-3 * m / (np.sqrt(v) + 1e-8)

        run(benchmark, impl, 0, step)
    else:
        torch = request.getfixturevalue("torch_module")
        p = torch.from_numpy(theta).requires_grad_()
        p.grad = torch.from_numpy(grad)
        opt = torch.optim.Adam([p], lr=1e-3)
        run(benchmark, impl, 0, opt.step)


@pytest.mark.parametrize("M, K, N", [(64, 289, 484), (288, 64, 484), (32, 10, 676)])
@pytest.mark.parametrize("impl", ["fastmnist", "numpy"])
def test_matmul(benchmark, impl, M, K, N):
    # One thread each: the convolution calls these products from its own prange tasks.
    benchmark.group = f"matmul {M}x{K} @ {K}x{N} on one thread (conv's products)"
    A, B = arrays((M, K), (K, N))
    C = np.empty((M, N), np.float32)
    if impl == "fastmnist":
        from fastmnist._kernels.gemm import matmul

        run(benchmark, impl, 2 * M * K * N, matmul, C, A, B)
    else:
        with threadpool_limits(1):
            run(benchmark, impl, 2 * M * K * N, np.dot, A, B, C)
