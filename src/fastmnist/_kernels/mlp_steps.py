"""Whole Adam steps of a dense softmax network in one call: the MLP's fast training path.

A step of mlp-seed (784-128-64-32-10, batch 32) is ~15 MFLOP, ~100 us of arithmetic; run
as a dozen kernel calls from Python it took 250 us, most of it in the calls. Here one call
runs many steps, each in two parallel regions (a region costs ~0.4 us inside a kernel):

1. Rows of the batch, split over the threads: each thread gathers its rows (scaled to
   float32), runs them forward through every layer and the softmax cross-entropy, and back
   through every layer's delta. All of that is row by row.
2. Rows of every weight matrix (and columns of every bias), split over the threads: each
   thread forms its rows of the gradient, their squared norm for the L2 term, and Adam's
   update; and refreshes its part of the transposed weights that step 1 multiplies deltas
   by (``gemm.matmul`` wants the right-hand matrix row by row).

Each output element is accumulated in the same order however the rows are split, and sums
over rows run serially, so the result does not depend on the number of threads.

Layout: ``theta``, ``grad``, ``m`` and ``v`` are the network's flat buffers; ``layers`` has
one row per dense layer: (fan_in, fan_out, offset of W, offset of b, offsets of the layer's
input and output in ``acts`` and ``deltas``, offset of W.T in ``WT``, activation code).
``acts`` holds the gathered input at offset 0 and every layer's output after it, each
(rows, width) for up to ``batch_size`` rows; ``deltas`` the gradients of the loss with
respect to the same.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._fp import flush_subnormals, restore_fp_mode
from ._jit import inlined_kernel, kernel, parallel_kernel
from .activation import IDENTITY, RELU, activate_row, activation_grad_row
from .gemm import matmul
from .loss import softmax_cross_entropy_row
from .optim import adam_range

FAN_IN, FAN_OUT, W_AT, B_AT, IN_AT, OUT_AT, WT_AT, CODE = range(8)


@kernel
def _matrix(buffer, offset, rows, cols):
    return buffer[offset:offset + rows * cols].reshape((rows, cols))


@kernel
def _part(n, part, n_parts):
    # [start, stop) of part ``part`` when n items are split into n_parts contiguous runs
    return n * part // n_parts, n * (part + 1) // n_parts


@inlined_kernel
def affine_rows(h, h_in, theta, layers, layer):
    # h (rows, fan_out) = h_in (rows, fan_in) @ W + b of dense layer ``layer``
    n_in, n_out = layers[layer, FAN_IN], layers[layer, FAN_OUT]
    matmul(h, h_in, _matrix(theta, layers[layer, W_AT], n_in, n_out))
    b = theta[layers[layer, B_AT]:layers[layer, B_AT] + n_out]
    for r in range(h.shape[0]):
        for j in range(n_out):
            h[r, j] += b[j]


@kernel
def _transpose_rows(WT, theta, layers, layer, i0, i1):
    # rows [i0, i1) of the layer's W into columns of its W.T
    n_in, n_out = layers[layer, FAN_IN], layers[layer, FAN_OUT]
    W = _matrix(theta, layers[layer, W_AT], n_in, n_out)
    T = _matrix(WT, layers[layer, WT_AT], n_out, n_in)
    for i in range(i0, i1):
        for j in range(n_out):
            T[j, i] = W[i, j]


@kernel
def _squared_norm(column_squares, theta, layers):
    # sum of theta's weights squared (biases left out), in float64
    total = 0.0
    for layer in range(layers.shape[0]):
        n_in, n_out = layers[layer, FAN_IN], layers[layer, FAN_OUT]
        W = _matrix(theta, layers[layer, W_AT], n_in, n_out)
        column_squares[:n_out] = 0
        for i in range(n_in):
            for j in range(n_out):
                column_squares[j] += np.float64(W[i, j]) * W[i, j]
        for j in range(n_out):
            total += column_squares[j]
    return total


@parallel_kernel
def adam_steps(theta, grad, m, v, WT, acts, deltas, row_loss, column_squares, X, divisor,
               labels, sample_weight, order, first_row, n_rows, batch_size, layers, n_parts,
               lr, beta1, beta2, eps, t, alpha):
    # Runs the steps over order[first_row:first_row + n_rows], batch_size rows each (the
    # last may be smaller), Adam's step count going t + 1, t + 2, ... Returns the sum over
    # batches of (the batch's loss, L2 term included) * (rows in the batch).
    real = theta.dtype.type
    n_layers = layers.shape[0]
    last = n_layers - 1
    caller_mode = flush_subnormals()
    # W.T of every layer but the first (whose input needs no delta), from theta as it is
    for layer in range(1, n_layers):
        _transpose_rows(WT, theta, layers, layer, 0, layers[layer, FAN_IN])
    total = 0.0
    for batch_start in range(first_row, first_row + n_rows, batch_size):
        B = min(batch_size, first_row + n_rows - batch_start)
        index = order[batch_start:batch_start + B]
        weight_sum = 0.0
        for r in range(B):
            weight_sum += sample_weight[index[r]]
        # 1. Rows of the batch: gather, forward, loss, deltas.
        for part in prange(n_parts):
            mode = flush_subnormals()  # per thread: workers too
            r0, r1 = _part(B, part, n_parts)
            x = _matrix(acts, layers[0, IN_AT], B, layers[0, FAN_IN])
            for r in range(r0, r1):
                source = X[index[r]]
                for j in range(source.size):
                    x[r, j] = real(source[j]) / real(divisor)
            for layer in range(n_layers):
                n_in, n_out = layers[layer, FAN_IN], layers[layer, FAN_OUT]
                h_in = _matrix(acts, layers[layer, IN_AT], B, n_in)
                h = _matrix(acts, layers[layer, OUT_AT], B, n_out)
                affine_rows(h[r0:r1], h_in[r0:r1], theta, layers, layer)
                code = IDENTITY if layer == last else layers[layer, CODE]
                for r in range(r0, r1):
                    activate_row(h[r], h[r], code)
            logits = _matrix(acts, layers[last, OUT_AT], B, layers[last, FAN_OUT])
            delta = _matrix(deltas, layers[last, OUT_AT], B, layers[last, FAN_OUT])
            for r in range(r0, r1):
                row_loss[r] = softmax_cross_entropy_row(delta[r], logits[r], labels[index[r]],
                                                        sample_weight[index[r]], weight_sum)
            for layer in range(last, 0, -1):
                n_in, n_out = layers[layer, FAN_IN], layers[layer, FAN_OUT]
                d_out = _matrix(deltas, layers[layer, OUT_AT], B, n_out)
                d_in = _matrix(deltas, layers[layer, IN_AT], B, n_in)
                h_in = _matrix(acts, layers[layer, IN_AT], B, n_in)
                matmul(d_in[r0:r1], d_out[r0:r1], _matrix(WT, layers[layer, WT_AT], n_out, n_in))
                for r in range(r0, r1):
                    activation_grad_row(d_in[r], d_in[r], h_in[r], layers[layer - 1, CODE])
            restore_fp_mode(mode)
        data_loss = 0.0
        for r in range(B):
            data_loss += row_loss[r]
        # Adam's scalars for this step, rounded to theta's dtype as optim.adam_step does.
        t += 1
        rate = real(lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t))
        a1, a2, tiny = real(1.0 - beta1), real(1.0 - beta2), real(eps)
        decay = real(alpha / weight_sum)
        # The L2 term's |W|^2, before the update, if there is one: serial, in a fixed
        # order, a column at a time (a sum along rows would be one long dependency chain).
        squares = _squared_norm(column_squares, theta, layers) if alpha != 0 else 0.0
        # 2. Rows of every weight matrix: gradient, Adam, transposed copy.
        for part in prange(n_parts):
            mode = flush_subnormals()
            for layer in range(n_layers):
                n_in, n_out = layers[layer, FAN_IN], layers[layer, FAN_OUT]
                w_at, b_at = layers[layer, W_AT], layers[layer, B_AT]
                h_in = _matrix(acts, layers[layer, IN_AT], B, n_in)
                d_out = _matrix(deltas, layers[layer, OUT_AT], B, n_out)
                i0, i1 = _part(n_in, part, n_parts)
                matmul(_matrix(grad, w_at, n_in, n_out)[i0:i1], h_in.T[i0:i1], d_out)
                lo, hi = w_at + i0 * n_out, w_at + i1 * n_out
                adam_range(theta[lo:hi], m[lo:hi], v[lo:hi], grad[lo:hi], rate, a1, a2, tiny,
                           decay)
                if layer > 0:
                    _transpose_rows(WT, theta, layers, layer, i0, i1)
                j0, j1 = _part(n_out, part, n_parts)
                lo, hi = b_at + j0, b_at + j1
                db = grad[lo:hi]
                db[:] = 0
                for r in range(B):
                    d_row = d_out[r, j0:j1]
                    for j in range(db.size):
                        db[j] += d_row[j]
                adam_range(theta[lo:hi], m[lo:hi], v[lo:hi], grad[lo:hi], rate, a1, a2, tiny,
                           real(0))
            restore_fp_mode(mode)
        # As the layer-by-layer path: the weighted mean loss plus alpha / 2 |W|^2 / sum(w).
        total += (data_loss / weight_sum + 0.5 * alpha * squares / weight_sum) * B
    restore_fp_mode(caller_mode)
    return total


# The warm-ups' network, for this module and mlp_forward: 3 -> 4 (relu) -> 2, 26 parameters,
# activations laid out for 2 rows (18 values).
WARMUP_LAYERS = np.array([[3, 4, 0, 20, 0, 6, 0, RELU], [4, 2, 12, 24, 6, 14, 0, IDENTITY]],
                         np.int64)


def _warmup(dtype) -> None:
    if dtype != np.float32:
        return  # float64 networks train on the generic path
    # softmax head, batches of 2 rows out of 3
    layers = WARMUP_LAYERS
    theta = np.linspace(-1, 1, 26).astype(dtype)
    buffers = [np.zeros(26, dtype) for _ in range(3)]
    WT, acts, deltas = np.zeros(8, dtype), np.zeros(18, dtype), np.zeros(18, dtype)
    X = np.arange(9, dtype=np.uint8).reshape(3, 3)
    for data in (X, X.astype(dtype)):
        adam_steps(theta, *buffers, WT, acts, deltas, np.zeros(2, dtype), np.zeros(4),
                   data, 255.0, np.array([0, 1, 1]), np.ones(3, dtype),
                   np.arange(3, dtype=np.int64), 0, 3, 2, layers, 2, 1e-3, 0.9, 0.999, 1e-8,
                   0, 1e-4)
