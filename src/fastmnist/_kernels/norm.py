"""Batch normalisation over the channels of NCHW images (Ioffe and Szegedy 2015).

- ``batchnorm2d_forward_train`` normalises with the batch statistics of each channel (over
  B, H, W), caches ``x_hat`` and ``inv_std`` for the backward pass and moves the running
  statistics like PyTorch: ``running = (1 - momentum) * running + momentum * batch_stat``,
  the running variance taking the unbiased batch variance.
- ``batchnorm2d_forward_eval`` normalises with the running statistics.
- ``batchnorm2d_backward`` is the backward pass of the training-mode forward.

Statistics are summed in float64 whatever the dtype: a float32 sum over a batch of 128
28x28 maps (100,000 values) would lose digits. Element-wise work stays in the array dtype.
``momentum`` and ``eps`` are Python floats.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import parallel_kernel


@parallel_kernel
def batchnorm2d_forward_train(y, running_mean, running_var, x_hat, inv_std, x, gamma, beta,
                              momentum, eps):
    # x (B, C, H, W), gamma (C,), beta (C,) -> y (B, C, H, W), x_hat (B, C, H, W), inv_std (C,);
    #   running_mean (C,), running_var (C,) updated in place
    B, C, H, W = x.shape
    n = B * H * W
    if n < 2:
        raise ValueError("batch normalisation needs more than one value per channel to train")
    # One thread per channel: its statistics are summed serially, in a fixed order, by the
    # thread that then writes that channel's outputs, so any thread count gives the same bits
    # (and a layer of one channel runs on one thread).
    for c in prange(C):
        total = 0.0
        for b in range(B):
            for i in range(H):
                for j in range(W):
                    total += x[b, c, i, j]
        mean = total / n
        # Two passes (mean, then squared deviations): one pass of sum(x^2) - n*mean^2
        # cancels catastrophically when the mean is large next to the spread.
        squares = 0.0
        for b in range(B):
            for i in range(H):
                for j in range(W):
                    d = x[b, c, i, j] - mean
                    squares += d * d
        inv_std[c] = 1.0 / np.sqrt(squares / n + eps)
        # (1 - momentum) * running + momentum * stat, written with momentum alone: given
        # both, fast-math could refold them differently in the serial and parallel twins.
        running_mean[c] += momentum * (mean - running_mean[c])
        running_var[c] += momentum * (squares / (n - 1) - running_var[c])
        shift = x.dtype.type(mean)
        scale = inv_std[c]
        g = gamma[c]
        t = beta[c]
        for b in range(B):
            for i in range(H):
                for j in range(W):
                    h = (x[b, c, i, j] - shift) * scale
                    x_hat[b, c, i, j] = h
                    y[b, c, i, j] = g * h + t


@parallel_kernel
def batchnorm2d_forward_eval(y, x, gamma, beta, running_mean, running_var, eps):
    # x (B, C, H, W), gamma, beta, running_mean, running_var (C,) -> y (B, C, H, W)
    B, C, H, W = x.shape
    # Every (image, channel) plane is independent: split over all B * C of them.
    for bc in prange(B * C):
        b = bc // C
        c = bc % C
        inv = 1.0 / np.sqrt(running_var[c] + eps)
        scale = x.dtype.type(gamma[c] * inv)
        shift = x.dtype.type(beta[c] - gamma[c] * inv * running_mean[c])
        for i in range(H):
            for j in range(W):
                y[b, c, i, j] = scale * x[b, c, i, j] + shift


@parallel_kernel
def batchnorm2d_backward(dx, dgamma, dbeta, x_hat, inv_std, dy, gamma):
    # dy (B, C, H, W), x_hat (B, C, H, W), inv_std (C,), gamma (C,)
    #   -> dx (B, C, H, W), dgamma (C,), dbeta (C,)  (written, not accumulated)
    B, C, H, W = dy.shape
    n = B * H * W
    # One thread per channel, as in the forward pass: the channel's sums are serial and
    # owned by the thread that writes its dx, so the result does not depend on thread count.
    for c in prange(C):
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for b in range(B):
            for i in range(H):
                for j in range(W):
                    sum_dy += dy[b, c, i, j]
                    sum_dy_xhat += dy[b, c, i, j] * x_hat[b, c, i, j]
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        # dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), written as
        # a * dy + shift + k * x_hat with per-channel coefficients.
        g = gamma[c] * inv_std[c]
        a = x_hat.dtype.type(g)
        shift = x_hat.dtype.type(-g * sum_dy / n)
        k = x_hat.dtype.type(-g * sum_dy_xhat / n)
        for b in range(B):
            for i in range(H):
                for j in range(W):
                    dx[b, c, i, j] = a * dy[b, c, i, j] + shift + k * x_hat[b, c, i, j]


def _warmup(dtype) -> None:
    x = np.arange(8, dtype=dtype).reshape(2, 1, 2, 2)
    ones, zeros = np.ones(1, dtype), np.zeros(1, dtype)
    y, x_hat, dx = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    inv_std, dgamma, dbeta = np.empty_like(ones), np.empty_like(ones), np.empty_like(ones)
    batchnorm2d_forward_train(y, zeros.copy(), ones.copy(), x_hat, inv_std, x, ones, zeros,
                              0.1, 1e-5)
    batchnorm2d_forward_eval(y, x, ones, zeros, zeros, ones, 1e-5)
    batchnorm2d_backward(dx, dgamma, dbeta, x_hat, inv_std, x, ones)
