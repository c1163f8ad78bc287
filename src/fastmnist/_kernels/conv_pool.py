"""A convolution, its ReLU and a 2x2 max pool (stride 2), as one layer each way.

The three as separate layers write the convolution's whole output (cnn-keras, batch 128:
11 MB for the first, 4 MB for the second), read it to pool, and in the backward pass write
and read a gradient of the same size again. Here each product's output is pooled while it
is in the cache, and the pool remembers which element of each window was its first maximum
(``codes``), so that the backward pass rebuilds the images' gradient in the scratch from
the pooled one. Training cnn-keras then loads these two kernels, not the four of conv and
pool (each kernel's machine code takes several MB).

The values are those of conv2d_forward with the ReLU in it, then maxpool2d_forward and
maxpool2d_backward through the ReLU, then conv2d_backward: the same products, helpers and
order (tests/test_kernels_conv_pool.py checks the bits).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import inlined_kernel, parallel_kernel
from .activation import RELU, activate_row
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
from .pool import _first_max_2x2, _maxpool_plane

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
    B, C, F, K, CKK, P, G, T, S = _sizes(work, x, w, stride, H_out, W_out)
    for t in prange(T):
        slot = _slot(work, t, G, S, CKK, F)
        wb = _weights_with_bias(slot, w, b)
        for g in range(t, G, T):
            for first, n in _chunks(g, G, B, P):
                colT, out, _, xp = _image_scratch(slot, n, C, F, K, stride, H_out, W_out)
                _columns(colT, xp, x, first, n, pad_top, pad_left, K, stride, H_out, W_out)
                matmul(out.reshape(F, n * P), wb, colT.reshape(CKK + 1, n * P))
                flat = out.reshape(F * n * P)
                activate_row(flat, flat, RELU)  # the whole product in one loop
                for i in range(n):
                    for f in range(F):
                        _pool(y[first + i, f], codes[first + i, f],
                              out[f, i].reshape(H_out, W_out), need_codes)


@inlined_kernel
def _pool(y, codes, x, need_codes):
    # x (H', W') a ReLU's output -> y (H' // 2, W' // 2), its 2x2 max pool, and the codes
    _maxpool_plane(y, x, 2, 2)
    if not need_codes:
        return
    for oy in range(y.shape[0]):
        x0, x1, peaks, row = x[2 * oy], x[2 * oy + 1], y[oy], codes[oy]
        for ox in range(y.shape[1]):
            peak = peaks[ox]
            first = _first_max_2x2(x0[2 * ox], x0[2 * ox + 1], x1[2 * ox], peak)
            row[ox] = NO_GRADIENT if peak == 0 else first


@parallel_kernel
def conv2d_relu_pool_backward(dx, dw, db, work, x, dy, codes, w, stride, pad_top, pad_left,
                              H_out, W_out, need_dx):
    # dy (B, F, H' // 2, W' // 2), the gradient of the pooled output, with the forward
    # pass's codes, x (B, C, H, W), w (F, C, K, K) -> dx (B, C, H, W), dw, db (F,)
    # dx is left untouched when need_dx is False: the first layer has no use for it.
    B, C, F, K, CKK, P, G, T, S = _sizes(work, x, w, stride, H_out, W_out)
    for t in prange(T):
        slot = _slot(work, t, G, S, CKK, F)
        term, wT = _backward_scratch(slot, w, need_dx)
        for g in range(t, G, T):
            part = _zeroed_partial(work, g, CKK, F)
            for first, n in _chunks(g, G, B, P):
                colT, dyg, flat, xp = _image_scratch(slot, n, C, F, K, stride, H_out, W_out)
                _columns(colT, xp, x, first, n, pad_top, pad_left, K, stride, H_out, W_out)
                for i in range(n):
                    for f in range(F):
                        _unpool(dyg[f, i].reshape(H_out, W_out), dy[first + i, f],
                                codes[first + i, f])
                _chunk_gradients(dx, part, term, wT, colT, dyg.reshape(F, n * P), flat, xp,
                                 first, pad_top, pad_left, K, stride, H_out, W_out, need_dx)
    for f in prange(F):
        _sum_partials(dw, db, work, f, G)


@inlined_kernel
def _unpool(dx, dy, codes):
    # dy (H'', W'') -> dx (H', W'): each window's gradient at its code, 0 elsewhere (and in
    # the last row and column of an odd plane, which belong to no window)
    dx[2 * dy.shape[0]:] = 0
    dx[:, 2 * dy.shape[1]:] = 0
    for oy in range(dy.shape[0]):
        d0, d1 = dx[2 * oy], dx[2 * oy + 1]
        for ox in range(dy.shape[1]):
            g, code = dy[oy, ox], codes[oy, ox]
            d0[2 * ox] = g if code == 0 else 0
            d0[2 * ox + 1] = g if code == 1 else 0
            d1[2 * ox] = g if code == 2 else 0
            d1[2 * ox + 1] = g if code == 3 else 0


def _warmup(dtype) -> None:
    x, w, b = np.ones((2, 1, 5, 5), dtype), np.ones((2, 1, 2, 2), dtype), np.ones(2, dtype)
    y, codes = np.empty((2, 2, 2, 2), dtype), np.empty((2, 2, 2, 2), dtype)
    work = np.empty(conv2d_workspace_shape(2, 1, 2, 2, 1, 4, 4), dtype)
    conv2d_relu_pool_forward(y, codes, work, x, w, b, 1, 0, 0, 4, 4, True)
    for need_dx in (False, True):
        conv2d_relu_pool_backward(np.empty_like(x), np.empty_like(w), np.empty_like(b), work, x,
                                  y, codes, w, 1, 0, 0, 4, 4, need_dx)
