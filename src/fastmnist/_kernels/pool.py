"""Pooling of NCHW images: max pooling (any pool size and stride, no padding) and global
average pooling, forward and backward.

Max pooling keeps, per output, the flat index ``iy * W + ix`` of the window's first
maximum in its (H, W) plane (``argmax``, an integer array shaped like y); the backward
pass sends each gradient there. A NaN counts as larger than any number, so it propagates
(the first NaN of a window wins). Output size, computed by the caller:
H' = (H - pool) // stride + 1, likewise W'.

Every (image, channel) plane is independent, so the kernels split the B * C planes over
the threads: each thread owns whole planes of the output, whatever the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import inlined_kernel, kernel, parallel_kernel


@parallel_kernel
def maxpool2d_forward(y, argmax, x, pool, stride):
    # x (B, C, H, W) -> y (B, C, H', W'), argmax (B, C, H', W') flat index in the plane
    B, C = x.shape[0], x.shape[1]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        # The usual 2x2 pool of stride 2 passes literals: once inlined, LLVM unrolls the
        # window, which runs 7x faster than a window size known only at run time.
        if pool == 2 and stride == 2:
            _maxpool_plane(y[b, c], argmax[b, c], x[b, c], 2, 2)
        else:
            _maxpool_plane(y[b, c], argmax[b, c], x[b, c], pool, stride)


@kernel
def _maxpool_plane(y, argmax, x, pool, stride):
    # x (H, W) -> y (H', W'), argmax (H', W')
    W = x.shape[1]
    for oy in range(y.shape[0]):
        for ox in range(y.shape[1]):
            top, left = oy * stride, ox * stride
            best, where = x[top, left], top * W + left
            for iy in range(top, top + pool):
                for ix in range(left, left + pool):
                    v = x[iy, ix]
                    # Selects, not branches: random data would mispredict half of them.
                    take = _takes_over(best, v)
                    best = v if take else best
                    where = iy * W + ix if take else where
            y[oy, ox] = best
            argmax[oy, ox] = where


@inlined_kernel
def _takes_over(best, v):
    # Whether v replaces best as a window's maximum: strictly greater keeps the first of
    # equal maxima; the NaN test lets the first NaN in and nothing after it.
    return (v > best) | ((v != v) & (best == best))


@parallel_kernel
def maxpool2d_values(y, x, pool, stride):
    # x (B, C, H, W) -> y (B, C, H', W'), the values of maxpool2d_forward without argmax,
    # for prediction: tracking where each maximum was keeps the loops from vectorising
    # (2x2 pool of (32, 26, 26): 1.8 us an image against 12.8).
    B, C = x.shape[0], x.shape[1]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        if pool == 2 and stride == 2:  # literals, as in maxpool2d_forward
            _maxpool_plane_values(y[b, c], x[b, c], 2, 2)
        else:
            _maxpool_plane_values(y[b, c], x[b, c], pool, stride)


@inlined_kernel
def _maxpool_plane_values(y, x, pool, stride):
    for oy in range(y.shape[0]):
        row = y[oy]
        for ox in range(row.size):
            top, left = oy * stride, ox * stride
            best = x[top, left]
            for iy in range(top, top + pool):
                for ix in range(left, left + pool):
                    v = x[iy, ix]
                    best = v if _takes_over(best, v) else best
            row[ox] = best


@parallel_kernel
def maxpool2d_backward(dx, argmax, dy):
    # dy (B, C, H', W'), argmax (B, C, H', W') -> dx (B, C, H, W)
    C = dx.shape[1]
    for bc in prange(dx.shape[0] * C):
        b, c = bc // C, bc % C
        _route_plane(dx[b, c], argmax[b, c], dy[b, c], dy[b, c], False)


@parallel_kernel
def maxpool2d_relu_backward(dx, argmax, dy, y):
    # maxpool2d_backward, then the backward pass of the ReLU that fed the pool, in one pass
    # over dx: y (B, C, H', W') is the pool's output, so the ReLU's output at argmax, and
    # ReLU passes no gradient where that is 0. The same bits as the two kernels one after
    # the other, without reading and writing the ReLU's output gradient again (cnn-keras,
    # batch 128: ReLU's backward passes took 2.5 ms of a 16 ms step).
    C = dx.shape[1]
    for bc in prange(dx.shape[0] * C):
        b, c = bc // C, bc % C
        _route_plane(dx[b, c], argmax[b, c], dy[b, c], y[b, c], True)


@inlined_kernel
def _route_plane(dx, argmax, dy, y, relu_gate):
    # One plane: dy (H', W') -> dx (H, W) at argmax; with relu_gate, not where y is 0
    plane = dx.reshape(dx.size)
    plane[:] = 0
    # Overlapping windows (stride < pool) add into the same input, in output order.
    for oy in range(dy.shape[0]):
        for ox in range(dy.shape[1]):
            # NaN == 0 is False: a NaN maximum passes its gradient, as in ReLU.
            if not (relu_gate and y[oy, ox] == 0):
                plane[argmax[oy, ox]] += dy[oy, ox]


@parallel_kernel
def global_avgpool_forward(y, x):
    # x (B, C, H, W) -> y (B, C)
    B, C, H, W = x.shape
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        total = 0.0  # float64 whatever the dtype: a plane can hold many values
        for iy in range(H):
            for ix in range(W):
                total += x[b, c, iy, ix]
        y[b, c] = total / (H * W)


@parallel_kernel
def global_avgpool_backward(dx, dy):
    # dy (B, C) -> dx (B, C, H, W)
    B, C, H, W = dx.shape
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        share = dy[b, c] / (H * W)
        for iy in range(H):
            for ix in range(W):
                dx[b, c, iy, ix] = share


def _warmup(dtype) -> None:
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    y, argmax = np.empty((1, 1, 2, 2), dtype), np.empty((1, 1, 2, 2), np.int64)
    maxpool2d_forward(y, argmax, x, 2, 2)
    maxpool2d_backward(np.empty_like(x), argmax, y)
    maxpool2d_relu_backward(np.empty_like(x), argmax, y, y)
    maxpool2d_values(y, x, 2, 2)
    pooled = np.empty((1, 1), dtype)
    global_avgpool_forward(pooled, x)
    global_avgpool_backward(np.empty_like(x), pooled)
