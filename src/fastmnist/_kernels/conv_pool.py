"""A convolution, its ReLU and a 2x2 max pool (stride 2), as one layer each way.

The three as separate layers write the convolution's whole output (cnn-keras, batch 128:
11 MB for the first, 4 MB for the second), read it to pool, and in the backward pass write
and read a gradient of the same size again. Here each product's output is pooled while it
is in the cache, and the pool remembers which element of each window was its first maximum
(``codes``), so that the backward pass rebuilds the images' gradient in the scratch from
the pooled one. Training cnn-keras then loads these two kernels, not the four of conv and
pool (each kernel's machine code takes several MB).

The products' columns come in pool order (conv._im2col_pooled): only the pixels a window
covers, grouped by their place in the window, so that pooling and unpooling are loops over
contiguous runs, and an odd plane's last row and column are never computed (cnn-keras's
second layer: 100 of 121 pixels). Measured at batch 128 on 2 threads against the same
kernels in image order, forward + backward: conv1 1.02 + 1.04 -> 0.62 + 0.92 ms, conv2
2.11 + 4.42 -> 1.85 + 4.13 ms.

The values are those of conv2d_forward with the ReLU in it, then maxpool2d_forward and
maxpool2d_backward through the ReLU, then conv2d_backward: y, the codes and dx to the bit;
dW and db to rounding, since their products add up the pixels in pool order
(tests/test_kernels_conv_pool.py).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import inlined_kernel, parallel_kernel
from .conv import (
    _backward_scratch,
    _chunk_gradients,
    _chunks,
    _columns,
    _image_scratch,
    _sizes,
    _slot,
    _sum_partials,
    _weights_with_bias,
    _zeroed_partial,
    conv2d_workspace_shape,
)
from .gemm import matmul
from .pool import _takes_over

# codes: the first maximum of a window in window order (top left, top right, bottom left,
# bottom right), or NO_GRADIENT where ReLU passes none (the maximum is 0). They are stored
# in the dtype of the data: selects all of one width vectorise (uint8 codes took 1.8x as
# long to find).
NO_GRADIENT = 4


@parallel_kernel
def conv2d_relu_pool_forward(y, codes, work, x, w, b, stride, pad_top, pad_left, H_out,
                             W_out, need_codes):
    # x (B, C, H, W), w (F, C, K, K), b (F,) -> y (B, F, H' // 2, W' // 2), the 2x2 max pool
    # of the ReLU of the convolution (H' = H_out, W' = W_out), and codes (like y) when
    # need_codes (training; to predict, they would add 8 µs to one cnn-keras image's 65)
    H2, W2 = H_out // 2 * 2, W_out // 2 * 2  # the pixels in a window, in pool order
    B, C, F, K, CKK, P, G, T, S = _sizes(work, x, w, stride, H2, W2)
    Q = P // 4
    for t in prange(T):
        slot = _slot(work, t, G, S, CKK, F)
        wb = _weights_with_bias(slot, w, b)
        for g in range(t, G, T):
            for first, n in _chunks(g, G, B, P):
                colT, out, _, xp = _image_scratch(slot, n, C, F, K, stride, H2, W2)
                _columns(colT, xp, x, first, n, pad_top, pad_left, K, stride, H2, W2, True)
                matmul(out.reshape(F, n * P), wb, colT.reshape(CKK + 1, n * P))
                for i in range(n):
                    _pool(y[first + i].reshape(F, Q), codes[first + i].reshape(F, Q), out, i,
                          need_codes)


@inlined_kernel
def _pool(y, codes, out, i, need_codes):
    # out (F, n, 4 Q): the product, image i's row of each filter the four places of its
    # windows in pool order -> y (F, Q), the maximum of each window's ReLU, and its codes.
    # The ReLU of the maximum is the maximum of the ReLUs (NaN included, which both keep),
    # and their first maxima are the same where it is not 0.
    # Each filter's places are read from the row itself, out[f, i][place * Q + j]: through
    # (4, Q) views of each row, a call per filter, these loops timed alone took 4 to 8
    # times as long (conv2's 25 windows a filter: 32 -> 5.4 us for 4 images).
    F, Q = y.shape
    for f in range(F):
        yf, cf, quads = y[f], codes[f], out[f, i]
        if not need_codes:
            for j in range(Q):
                yf[j] = _relu(_peak(quads[j], quads[Q + j], quads[2 * Q + j], quads[3 * Q + j]))
            continue
        for j in range(Q):
            peak, first = quads[j], 0
            b, c, d = quads[Q + j], quads[2 * Q + j], quads[3 * Q + j]
            if _takes_over(peak, b):
                peak, first = b, 1
            if _takes_over(peak, c):
                peak, first = c, 2
            if _takes_over(peak, d):
                peak, first = d, 3
            pooled = _relu(peak)
            yf[j] = pooled
            cf[j] = NO_GRADIENT if pooled == 0 else first


@inlined_kernel
def _peak(a, b, c, d):
    # The maximum of a window, the first NaN if it holds one (pool._takes_over)
    peak = a
    peak = b if _takes_over(peak, b) else peak
    peak = c if _takes_over(peak, c) else peak
    return d if _takes_over(peak, d) else peak


@inlined_kernel
def _relu(v):
    return 0 if v <= 0 else v  # as activate_row writes it: NaN stays NaN


@parallel_kernel
def conv2d_relu_pool_backward(dx, dw, db, work, x, dy, codes, w, stride, pad_top, pad_left,
                              H_out, W_out, need_dx):
    # dy (B, F, H' // 2, W' // 2), the gradient of the pooled output, with the forward
    # pass's codes, x (B, C, H, W), w (F, C, K, K) -> dx (B, C, H, W), dw, db (F,)
    # dx is left untouched when need_dx is False: the first layer has no use for it.
    H2, W2 = H_out // 2 * 2, W_out // 2 * 2
    B, C, F, K, CKK, P, G, T, S = _sizes(work, x, w, stride, H2, W2)
    Q = P // 4
    for t in prange(T):
        slot = _slot(work, t, G, S, CKK, F)
        term, wT = _backward_scratch(slot, w, need_dx)
        for g in range(t, G, T):
            part = _zeroed_partial(work, g, CKK, F)
            for first, n in _chunks(g, G, B, P):
                colT, dyg, flat, xp = _image_scratch(slot, n, C, F, K, stride, H2, W2)
                _columns(colT, xp, x, first, n, pad_top, pad_left, K, stride, H2, W2, True)
                for i in range(n):
                    _unpool(dyg, dy[first + i].reshape(F, Q), codes[first + i].reshape(F, Q), i)
                _chunk_gradients(dx, part, term, wT, colT, dyg.reshape(F, n * P), flat, xp,
                                 first, pad_top, pad_left, K, stride, H2, W2, need_dx, True)
    for f in prange(F):
        _sum_partials(dw, db, work, f, G)


@inlined_kernel
def _unpool(dyg, dy, codes, i):
    # dy (F, Q) -> dyg (F, n, 4 Q), image i's row of each filter, in pool order: each
    # window's gradient at its code, 0 at its other places (indexed as in _pool; timed
    # alone, 25 -> 3.7 us for 4 conv2 images)
    F, Q = dy.shape
    for f in range(F):
        quads, dyf, cf = dyg[f, i], dy[f], codes[f]
        for place in range(4):
            for j in range(Q):
                quads[place * Q + j] = dyf[j] if cf[j] == place else 0


def conv2d_relu_pool_workspace_shape(batch: int, channels: int, filters: int, K: int,
                                     stride: int, H_out: int, W_out: int,
                                     threads: int | None = None) -> tuple[int]:
    """Shape of the ``work`` array that both kernels take (dtype of x), for a convolution
    with an H_out x W_out output: that of ``conv2d_workspace_shape`` for the pixels in a
    window (H_out and W_out made even)."""
    return conv2d_workspace_shape(batch, channels, filters, K, stride, H_out // 2 * 2,
                                  W_out // 2 * 2, threads)


def _warmup(dtype) -> None:
    x, w, b = np.ones((2, 1, 5, 5), dtype), np.ones((2, 1, 2, 2), dtype), np.ones(2, dtype)
    y, codes = np.empty((2, 2, 2, 2), dtype), np.empty((2, 2, 2, 2), dtype)
    work = np.empty(conv2d_relu_pool_workspace_shape(2, 1, 2, 2, 1, 4, 4), dtype)
    conv2d_relu_pool_forward(y, codes, work, x, w, b, 1, 0, 0, 4, 4, True)
    for need_dx in (False, True):
        conv2d_relu_pool_backward(np.empty_like(x), np.empty_like(w), np.empty_like(b), work, x,
                                  y, codes, w, 1, 0, 0, 4, 4, need_dx)
