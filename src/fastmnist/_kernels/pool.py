"""Pooling of NCHW images: max pooling (any pool size and stride, no padding) and global
average pooling, forward and backward.

Max pooling stores no index of each window's maximum: the backward pass finds it again in
the pool's input x, as the first element of the window that equals the output y (or the
first NaN, when y is NaN). A NaN counts as larger than any number, so it propagates (the
first NaN of a window wins). Tracking the maximum's position in the forward pass kept its
loops from vectorising (2x2 pool of (32, 26, 26): 12.8 us an image against 1.8 without).
Output size, computed by the caller: H' = (H - pool) // stride + 1, likewise W'.

Every (image, channel) plane is independent, so the kernels split the B * C planes over
the threads: each thread owns whole planes of the output, whatever the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import inlined_kernel, parallel_kernel


@parallel_kernel
def maxpool2d_forward(y, x, pool, stride):
    # x (B, C, H, W) -> y (B, C, H', W'), the maximum of each window
    B, C = x.shape[0], x.shape[1]
    for bc in prange(B * C):
        b, c = bc // C, bc % C
        # The usual 2x2 pool of stride 2 passes literals: once inlined, LLVM unrolls the
        # window, which runs 7x faster than a window size known only at run time.
        if pool == 2 and stride == 2:
            _maxpool_plane(y[b, c], x[b, c], 2, 2)
        else:
            _maxpool_plane(y[b, c], x[b, c], pool, stride)


@inlined_kernel
def _maxpool_plane(y, x, pool, stride):
    # x (H, W) -> y (H', W')
    for oy in range(y.shape[0]):
        row = y[oy]
        for ox in range(row.size):
            top, left = oy * stride, ox * stride
            best = x[top, left]
            for iy in range(top, top + pool):
                for ix in range(left, left + pool):
                    v = x[iy, ix]
                    # Selects, not branches: random data would mispredict half of them.
                    best = v if _takes_over(best, v) else best
            row[ox] = best


@inlined_kernel
def _takes_over(best, v):
    # Whether v replaces best as a window's maximum: strictly greater keeps the first of
    # equal maxima; the NaN test lets the first NaN in and nothing after it.
    return (v > best) | ((v != v) & (best == best))


@parallel_kernel
def maxpool2d_backward(dx, dy, x, y, pool, stride, relu_gate=False):
    # dy (B, C, H', W') -> dx (B, C, H, W): each window's gradient goes to its maximum in
    # x (B, C, H, W), the pool's input, of which y (B, C, H', W') is the output.
    # With relu_gate, the backward pass of the ReLU that fed the pool comes in the same
    # pass over dx: y is the ReLU's output at each window's maximum, and ReLU passes no
    # gradient where that is 0. The same values as the two passes one after the other,
    # without reading and writing the ReLU's output gradient again (cnn-keras, batch 128:
    # ReLU's backward passes took 2.5 ms of a 16 ms step).
    # When windows do not overlap (stride >= pool), dx may be x itself: each element of x
    # is read by one window at most, which writes it only after reading the whole window.
    C = dx.shape[1]
    for bc in prange(dx.shape[0] * C):
        b, c = bc // C, bc % C
        _route(dx[b, c], dy[b, c], x[b, c], y[b, c], pool, stride, relu_gate)


@inlined_kernel
def _route(dx, dy, x, y, pool, stride, relu_gate):
    # One plane: dy (H', W') -> dx (H, W) at each window's first maximum in x; with
    # relu_gate, not where the maximum is 0 (NaN == 0 is False: a NaN maximum passes its
    # gradient, as in ReLU).
    if pool == 2 and stride == 2:
        _route_2x2(dx, dy, x, y, relu_gate)
    elif stride >= pool:
        _route_apart(dx, dy, x, y, pool, stride, relu_gate)
    else:
        dx[:] = 0
        for oy in range(dy.shape[0]):
            for ox in range(dy.shape[1]):
                peak = y[oy, ox]
                if not (relu_gate and peak == 0):
                    top, left = oy * stride, ox * stride
                    iy, ix = _first_max(x, peak, top, left, pool)
                    # Overlapping windows add into the same input, in order.
                    dx[iy, ix] += dy[oy, ox]


@inlined_kernel
def _route_apart(dx, dy, x, y, pool, stride, relu_gate):
    # Windows that do not overlap: elements of no window get 0, and each window is written
    # whole (the gradient at its first maximum, 0 elsewhere) after it was read.
    for iy in range(dx.shape[0]):
        for ix in range(dx.shape[1]):
            if not (_in_window(iy, dy.shape[0], pool, stride)
                    and _in_window(ix, dy.shape[1], pool, stride)):
                dx[iy, ix] = 0
    for oy in range(dy.shape[0]):
        for ox in range(dy.shape[1]):
            peak = y[oy, ox]
            g = 0 if relu_gate and peak == 0 else dy[oy, ox]
            top, left = oy * stride, ox * stride
            iy, ix = _first_max(x, peak, top, left, pool)
            for wy in range(top, top + pool):
                for wx in range(left, left + pool):
                    dx[wy, wx] = g if wy == iy and wx == ix else 0


@inlined_kernel
def _in_window(i, n_out, pool, stride):
    # Whether input row (or column) i lies in one of the n_out windows of a pool >= stride
    return i // stride < n_out and i % stride < pool


@inlined_kernel
def _first_max(x, peak, top, left, pool):
    # (iy, ix) of the first element of the window x[top:top+pool, left:left+pool] equal to
    # peak (or NaN, when peak is NaN)
    for iy in range(top, top + pool):
        for ix in range(left, left + pool):
            v = x[iy, ix]
            if v == peak or (v != v and peak != peak):
                return iy, ix
    return top, left


@inlined_kernel
def _route_2x2(dx, dy, x, y, relu_gate):
    # The usual 2x2 pool of stride 2, written out: every input of a window is written once,
    # the gradient or 0, through selects rather than branches (where the maximum sits is
    # random), after the window's first three were read (the fourth is never read).
    # The last row and column of an odd plane belong to no window.
    dx[2 * dy.shape[0]:] = 0
    dx[:, 2 * dy.shape[1]:] = 0
    for oy in range(dy.shape[0]):
        x0, x1, d0, d1 = x[2 * oy], x[2 * oy + 1], dx[2 * oy], dx[2 * oy + 1]
        for ox in range(dy.shape[1]):
            peak, g = y[oy, ox], dy[oy, ox]
            g = 0 if relu_gate and peak == 0 else g
            nan = peak != peak
            a, b, c = x0[2 * ox], x0[2 * ox + 1], x1[2 * ox]
            # In window order: the first equal to the maximum (or the first NaN) takes it;
            # the last element when none of the first three does. (Flags, not an index:
            # comparing an index four times ran 2.8x slower here.)
            take_a = (a == peak) | (nan & (a != a))
            take_b = (take_a ^ True) & ((b == peak) | (nan & (b != b)))
            take_c = ((take_a | take_b) ^ True) & ((c == peak) | (nan & (c != c)))
            take_d = (take_a | take_b | take_c) ^ True
            d0[2 * ox] = g if take_a else 0
            d0[2 * ox + 1] = g if take_b else 0
            d1[2 * ox] = g if take_c else 0
            d1[2 * ox + 1] = g if take_d else 0


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
    y = np.empty((1, 1, 2, 2), dtype)
    maxpool2d_forward(y, x, 2, 2)
    maxpool2d_backward(np.empty_like(x), y, x, y, 2, 2)
    maxpool2d_backward(np.empty_like(x), y, x, y, 2, 2, True)
    pooled = np.empty((1, 1), dtype)
    global_avgpool_forward(pooled, x)
    global_avgpool_backward(np.empty_like(x), pooled)
