"""The kernels together: a finite-difference check of a whole conv -> pool -> dense ->
softmax cross-entropy stack, and fastmnist.warmup()."""

import importlib

import numpy as np
from naive import numerical_gradient
from numba.core.registry import CPUDispatcher as Dispatcher

import fastmnist
from fastmnist._kernels import KERNEL_MODULES, conv, dense, loss, pool
from fastmnist._kernels import activation as act
from fastmnist._kernels._jit import ParallelKernel


def test_end_to_end_gradient_by_finite_differences():
    rng = np.random.default_rng(0)
    B, C, H, W, F, K, N = 2, 2, 6, 6, 3, 3, 4
    x = rng.standard_normal((B, C, H, W))
    w1, b1 = rng.standard_normal((F, C, K, K)) * 0.5, rng.standard_normal(F) * 0.1
    H1, W1, pt, pl = conv.conv_output_shape(H, W, K, 1, "same")
    w2, b2 = rng.standard_normal((F * (H1 // 2) * (W1 // 2), N)) * 0.3, rng.standard_normal(N)
    labels, weights = np.array([1, 3]), np.array([1.0, 2.0])
    work = np.empty(conv.conv2d_workspace_shape(B, C, F, K, 1, H1, W1))
    h1 = np.empty((B, F, H1, W1))
    p1 = np.empty((B, F, H1 // 2, W1 // 2))
    logits, dlogits, row_loss = np.empty((B, N)), np.empty((B, N)), np.empty(B)

    def forward():
        conv.conv2d_forward(h1, work, x, w1, b1, 1, pt, pl)
        flat = h1.reshape(B, -1)
        act.activation_forward(flat, flat, act.TANH)  # smooth, so differences are exact
        pool.maxpool2d_forward(p1, h1, 2, 2)
        dense.dense_forward(logits, p1.reshape(B, -1), w2, b2)
        return loss.softmax_cross_entropy(dlogits, row_loss, logits, labels, weights)

    forward()
    # Backward through the same stack, kernel by kernel.
    dp1, dw2, db2 = np.empty((B, p1[0].size)), np.empty_like(w2), np.empty_like(b2)
    dense.dense_backward(dp1, dw2, db2, dlogits, p1.reshape(B, -1), w2, True)
    dh1 = np.empty_like(h1)
    pool.maxpool2d_backward(dh1, dp1.reshape(p1.shape), h1, p1, 2, 2)
    act.activation_backward(dh1.reshape(B, -1), dh1.reshape(B, -1), h1.reshape(B, -1), act.TANH)
    dx, dw1, db1 = np.empty_like(x), np.empty_like(w1), np.empty_like(b1)
    conv.conv2d_backward(dx, dw1, db1, work, x, dh1, w1, 1, pt, pl, True)
    for analytic, variable in ((dx, x), (dw1, w1), (db1, b1), (dw2, w2), (db2, b2)):
        np.testing.assert_allclose(analytic, numerical_gradient(forward, variable),
                                   rtol=1e-6, atol=1e-8)


def test_warmup_compiles_every_kernel_module():
    seconds = fastmnist.warmup()
    assert list(seconds) == list(KERNEL_MODULES)
    assert all(t >= 0 for t in seconds.values())
    # Every parallel kernel, and every public serial one, now has a float32 build; helpers
    # inlined into their callers compile only there.
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"fastmnist._kernels.{name}")
        kernels = [k.parallel if isinstance(k, ParallelKernel) else k
                   for key, k in vars(module).items() if isinstance(k, ParallelKernel)
                   or (isinstance(k, Dispatcher) and not key.startswith("_")
                       and k.targetoptions.get("inline") != "always")]
        assert kernels, name
        for kernel in kernels:
            assert any("float32" in str(sig) for sig in kernel.signatures), (
                name, kernel.__name__)
