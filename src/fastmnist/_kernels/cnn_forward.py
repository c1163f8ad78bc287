"""Class probabilities of a few images through a small CNN in one call.

Layer by layer from Python, each layer of one image cost a call, checks and buffers of its
own: cnn-keras, side by side, 33.6 us, against 28.2 in one call (PyTorch: ~100 us). Here one
call takes the rows from the raw input to the probabilities, for the networks prediction
runs as convolution blocks (3x3, stride 1, ReLU, 2x2 max pool: ``winograd``) and then dense
layers (``mlp_forward``):

- the input rows are copied into ``acts`` (scaled by 1 / divisor) and checked: a NaN or
  infinity stops the call before any layer runs;
- each convolution block goes through Winograd's kernels, its rows shared between threads
  as ``winograd.conv2d_relu_pool_winograd`` shares them, one image's too;
- the last block's output, flattened, goes through the dense layers and the softmax.

Each output has the same bits as in the layer-by-layer path, for any rows and threads: the
same kernels compute every value, in the same order.

Layout: ``convs`` has one row per convolution block: its input's channels, height and
width; its filters and pooled output's height and width; its padding; the offsets of its
W and b in ``theta``, of its transformed filters in ``U`` and of the W they were computed
from in ``seen``; and the offsets of its input and output in the activations, laid out
for one row (each (rows, values): for n rows, n times as far on). ``denses`` is
``mlp_steps``'s layer table of the dense layers after the last block, laid out the same
way.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .activation import IDENTITY
from .mlp_forward import _forward_block, _values_per_row
from .mlp_steps import IN_AT as DENSE_IN_AT
from .mlp_steps import OUT_AT as DENSE_OUT_AT
from .mlp_steps import _matrix
from .winograd import (
    POINTS,
    _blocks_of_worker,
    _point_step,
    _row_blocks,
    _workers,
    filters_shape,
    transform_filters,
)

(CHANNELS, HEIGHT, WIDTH, FILTERS, POOLED_HEIGHT, POOLED_WIDTH, PAD_TOP, PAD_LEFT, W_AT, B_AT,
 U_AT, SEEN_AT, IN_AT, OUT_AT) = range(14)


@parallel_kernel
def predict_proba(out, X, divisor, theta, convs, denses, U, seen, threads):
    # X (n, n_features), uint8 or float, scaled by 1 / divisor -> out (n, n_classes).
    # threads: Numba's thread count (the caller's setting). Returns the number of NaN
    # or infinite values in X; out is then left as it was.
    n = X.shape[0]
    acts = np.empty(n * _values_per_image(convs), theta.dtype)
    dense_acts = np.empty(n * _values_per_row(denses), theta.dtype)
    convs = _for_rows(convs, n, IN_AT, OUT_AT)
    denses = _for_rows(denses, n, DENSE_IN_AT, DENSE_OUT_AT)
    n_bad = _copy_input(acts, X, divisor, convs)
    if n_bad > 0:
        return n_bad
    for layer in range(convs.shape[0]):
        C, F = convs[layer, CHANNELS], convs[layer, FILTERS]
        x = _images(acts, convs[layer, IN_AT], n, C, convs[layer, HEIGHT], convs[layer, WIDTH])
        y = _images(acts, convs[layer, OUT_AT], n, F, convs[layer, POOLED_HEIGHT],
                    convs[layer, POOLED_WIDTH])
        W = theta[convs[layer, W_AT]:convs[layer, W_AT] + F * C * 9].reshape(F, C, 3, 3)
        b = theta[convs[layer, B_AT]:convs[layer, B_AT] + F]
        U_layer = U[convs[layer, U_AT]:convs[layer, U_AT] + POINTS * _point_step(C, F)]
        seen_layer = seen[convs[layer, SEEN_AT]:convs[layer, SEEN_AT] + F * C * 9]
        transform_filters(U_layer, seen_layer.reshape(F, C, 3, 3), W)  # if W changed
        # Each block's rows shared between the threads as conv2d_relu_pool_winograd shares
        # them, even one image's, and even those of one channel: its launch wakes the
        # threads the next block's finds awake (cnn-keras, one image: 26.0 -> 25.4 us)
        rows, block = _row_blocks(n, y.shape[2] * y.shape[3], True, threads)
        workers = _workers(rows, block, threads)
        top, left = convs[layer, PAD_TOP], convs[layer, PAD_LEFT]
        if workers == 1:  # no launch at all (one thread, or one block of rows)
            _blocks_of_worker(y, x, U_layer, b, top, left, 0, 1, block)
        else:
            for worker in prange(workers):
                _blocks_of_worker(y, x, U_layer, b, top, left, worker, workers, block)
    last = convs[convs.shape[0] - 1]  # its output, flattened channel-major as Flatten does
    features = _matrix(acts, last[OUT_AT], n,
                       last[FILTERS] * last[POOLED_HEIGHT] * last[POOLED_WIDTH])
    _forward_block(out, features, 1.0, theta, denses, dense_acts, 0, n)
    return 0


@kernel
def _values_per_image(convs):
    # one image's input and every block's output (laid out for one row: the last one last)
    last = convs.shape[0] - 1
    return (convs[last, OUT_AT]
            + convs[last, FILTERS] * convs[last, POOLED_HEIGHT] * convs[last, POOLED_WIDTH])


@kernel
def _for_rows(table, n, in_at, out_at):
    # A layer table laid out for one row -> for n rows: each layer's input and output,
    # (rows, values) at the offsets in columns in_at and out_at, start n times as far on
    scaled = table.copy()
    for layer in range(table.shape[0]):
        scaled[layer, in_at] *= n
        scaled[layer, out_at] *= n
    return scaled


@kernel
def _copy_input(acts, X, divisor, convs):
    # X's rows, scaled by 1 / divisor, into the first block's input; returns how many of
    # their values are NaN or infinite (value by value: a sum could overflow)
    n, size = X.shape[0], X.shape[1]
    x = _matrix(acts, convs[0, IN_AT], n, size)
    real = x.dtype.type
    n_bad = 0
    for r in range(n):
        for j in range(size):
            x[r, j] = real(X[r, j]) / real(divisor)
            n_bad += not math.isfinite(x[r, j])
    return n_bad


@kernel
def _images(buffer, offset, n, C, H, W):
    return buffer[offset:offset + n * C * H * W].reshape((n, C, H, W))


def _warmup(dtype) -> None:
    if dtype != np.float32:
        return  # float64 networks predict layer by layer
    # Two rows of 1 x 6 x 6 -> 2 x 3 x 3 -> 3 x 1 x 1 (3x3 filters, "same" padding) -> a
    # dense 3 -> 2 and softmax. theta: the Ws (18, 54, 6), then the bs (2, 3, 2).
    convs = np.array([[1, 6, 6, 2, 3, 3, 1, 1, 0, 78, 0, 0, 0, 36],
                      [2, 3, 3, 3, 1, 1, 1, 1, 18, 80, 288, 18, 36, 54]], np.int64)
    denses = np.array([[3, 2, 72, 83, 0, 3, 0, IDENTITY]], np.int64)
    theta = np.linspace(-1, 1, 85).astype(dtype)
    U = np.empty(filters_shape(1, 2)[0] + filters_shape(2, 3)[0], dtype)  # 288 + 352
    X = np.arange(72, dtype=np.uint8).reshape(2, 36)
    for data in (X, X.astype(dtype)):
        for run in (predict_proba.parallel, predict_proba.serial):
            seen = np.full(18 + 54, np.nan, dtype)
            run(np.empty((2, 2), dtype), data, 255.0, theta, convs, denses, U, seen, 2)
