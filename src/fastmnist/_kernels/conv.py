"""2-D convolution of NCHW images: ``conv2d_forward`` and ``conv2d_backward``.

x (B, C, H, W), weights w (F, C, K, K), bias (F,), y (B, F, H', W'). Stride and the zero
padding at the top and left are integers (``conv_output_shape`` computes them; the bottom
and right padding is whatever the output size implies); sizes are Python ints. Arrays are
C-contiguous. ``work`` is the caller's scratch, shaped by ``conv2d_workspace_shape``.

Per image, im2col and one BLAS product each (P = H' * W' pixels, CKK = C * K * K; colT
ends with a row of ones, so that BLAS adds the bias and sums db too):

- forward:  y_i (F, P) = (W | b) (F, CKK + 1) @ colT_i (CKK + 1, P);
- dW, db:   (dW | db) = sum over images of dy_i (F, P) @ colT_i.T;
- dx:       dcolT_i (CKK, P) = W.T @ dy_i, then col2im (the adjoint of im2col).

The images are split into fixed groups, one prange task each, and every task calls BLAS,
which ``_config.threads`` keeps on one thread: call these kernels inside it (outside, each
task would start BLAS threads of its own). Measured at the benchmark model's shapes
(batch 128, float32, 2 threads; conv 1->32 3x3 on 28x28 without dx, then 32->64 3x3 on
13x13 with dx), forward + backward, best of 30:

- this design: conv1 0.45 + 0.61 ms, conv2 3.4 + 6.5 ms (of which BLAS 2.9 + 5.6);
- one big product per layer, (F, CKK) @ (CKK, B * P): BLAS is on one thread, so conv2's
  three products alone take 15 ms;
- the products as Numba loops (c[i, :] += a[i, k] * b[k, :], 4 x 4 unrolled) instead of
  BLAS: conv2's take 4.1 + 3.3 + 3.5 ms. Loops of dot products with 4 x 4 register tiles
  did the forward one in 1.9 ms, but a dot product only vectorises with fast-math's
  "reassoc", which ``_config`` leaves out so that every build rounds the same way.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel

# The batch is split into at most this many groups of consecutive images, each a task with
# its own row of ``work`` and its own partial (dW | db). The split depends on the batch size
# only, never on the thread count, and the partials are added in group order: the same bits
# at any thread count. Sixteen groups keep 2, 4 or 8 threads evenly loaded.
_GROUPS = 16


def conv_output_shape(H: int, W: int, K: int, stride: int,
                      padding: str) -> tuple[int, int, int, int]:
    """(H_out, W_out, pad_top, pad_left) for ``padding`` "valid" or "same".

    "same" follows TensorFlow and PyTorch: H_out = ceil(H / stride), with a total padding
    of max((H_out - 1) * stride + K - H, 0), the top getting the smaller half.
    """
    if padding == "valid":
        if K > H or K > W:
            raise ValueError(f"a {K}x{K} kernel does not fit in a {H}x{W} image")
        return (H - K) // stride + 1, (W - K) // stride + 1, 0, 0
    if padding == "same":
        H_out, W_out = math.ceil(H / stride), math.ceil(W / stride)
        pad_h = max((H_out - 1) * stride + K - H, 0)
        pad_w = max((W_out - 1) * stride + K - W, 0)
        return H_out, W_out, pad_h // 2, pad_w // 2
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def conv2d_workspace_shape(batch: int, channels: int, filters: int, K: int, stride: int,
                           H_out: int, W_out: int) -> tuple[int, int]:
    """Shape of the ``work`` array that both conv2d kernels take (dtype of x)."""
    return min(batch, _GROUPS), _work_length(channels, filters, K, stride, H_out, W_out)


@kernel
def _work_length(C, F, K, stride, H_out, W_out):
    CKK1, H_pad, W_pad = C * K * K + 1, (H_out - 1) * stride + K, (W_out - 1) * stride + K
    return 2 * F * CKK1 + CKK1 * H_out * W_out + C * H_pad * W_pad


@kernel
def _scratch(row, C, F, K, stride, H_out, W_out):
    # A group's row of work -> its views: two (F, CKK + 1) (a partial (dW | db) and one
    # image's term of it, or (W | b)), colT (CKK + 1, H'*W'), the padded image (C, H_pad,
    # W_pad)
    CKK1, H_pad, W_pad = C * K * K + 1, (H_out - 1) * stride + K, (W_out - 1) * stride + K
    end_colT = 2 * F * CKK1 + CKK1 * H_out * W_out
    return (row[:F * CKK1].reshape(F, CKK1), row[F * CKK1:2 * F * CKK1].reshape(F, CKK1),
            row[2 * F * CKK1:end_colT].reshape(CKK1, H_out * W_out),
            row[end_colT:end_colT + C * H_pad * W_pad].reshape(C, H_pad, W_pad))


# colT has a last row of ones, so that BLAS also does the bias: forward with (W | b) @ colT,
# and db as the last column of dy_i @ colT.T (a plain loop summing dy cost as much as the
# product of the first layer: without fast-math's "reassoc" a sum does not vectorise).


@parallel_kernel
def conv2d_forward(y, work, x, w, b, stride, pad_top, pad_left):
    # x (B, C, H, W), w (F, C, K, K), b (F,) -> y (B, F, H', W'); work (G, S) scratch
    B, C, H, W = x.shape
    F, _, K, _ = w.shape
    H_out, W_out = y.shape[2], y.shape[3]
    CKK = C * K * K
    G = work.shape[0]
    if work.shape[1] < _work_length(C, F, K, stride, H_out, W_out):
        raise ValueError("work is smaller than conv2d_workspace_shape")
    # Images are independent: each group of images (and its row of work) is one task.
    for g in prange(G):
        wb, _, colT, xp = _scratch(work[g], C, F, K, stride, H_out, W_out)
        wb[:, :CKK] = w.reshape(F, CKK)
        wb[:, CKK] = b
        colT[CKK, :] = 1
        for i in range(g * B // G, (g + 1) * B // G):
            _im2col(colT, _padded(xp, x[i], pad_top, pad_left), K, stride, H_out, W_out)
            np.dot(wb, colT, y[i].reshape(F, H_out * W_out))


@parallel_kernel
def conv2d_backward(dx, dw, db, work, x, dy, w, stride, pad_top, pad_left, need_dx):
    # dy (B, F, H', W'), x (B, C, H, W), w (F, C, K, K) -> dx (B, C, H, W), dw, db (F,)
    # dx is left untouched when need_dx is False: the first layer has no use for it.
    B, C, H, W = x.shape
    F, _, K, _ = w.shape
    H_out, W_out = dy.shape[2], dy.shape[3]
    CKK = C * K * K
    G = work.shape[0]
    if work.shape[1] < _work_length(C, F, K, stride, H_out, W_out):
        raise ValueError("work is smaller than conv2d_workspace_shape")
    wm = w.reshape(F, CKK)
    # One task per group of images: it owns its images' dx and its partial (dW | db), so
    # nothing is shared between threads.
    for g in prange(G):
        part, term, colT, xp = _scratch(work[g], C, F, K, stride, H_out, W_out)
        part[:] = 0
        colT[CKK, :] = 1
        for i in range(g * B // G, (g + 1) * B // G):
            dyi = dy[i].reshape(F, H_out * W_out)
            _im2col(colT, _padded(xp, x[i], pad_top, pad_left), K, stride, H_out, W_out)
            np.dot(dyi, colT.T, term)
            _add(part.reshape(part.size), term.reshape(term.size))
            if need_dx:
                np.dot(wm.T, dyi, colT[:CKK])  # colT is spent: it takes this image's dcolT
                if _needs_padding(dx[i], xp, pad_top, pad_left):
                    _col2im(xp, colT, K, stride, H_out, W_out)
                    _unpad(dx[i], xp, pad_top, pad_left)
                else:
                    _col2im(dx[i], colT, K, stride, H_out, W_out)
    # (dW | db) = the partial ones added in group order; each thread owns whole filters.
    dwm = dw.reshape(F, CKK)
    for f in prange(F):
        start = f * (CKK + 1)
        dwm[f, :] = work[0, start:start + CKK]
        db[f] = work[0, start + CKK]
        for g in range(1, G):
            _add(dwm[f], work[g, start:start + CKK])
            db[f] += work[g, start + CKK]


@kernel
def _add(total, term):
    # term (n,) -> total (n,) += term
    for t in range(total.size):
        total[t] += term[t]


# With padding, the image is first copied into a zero-padded plane, so that im2col and
# col2im index without bounds tests (those, or a view sliced per row, made them 2-6x
# slower). The plane covers the windows exactly: (H' - 1) * stride + K rows.


@kernel
def _needs_padding(xi, xp, pad_top, pad_left):
    return pad_top > 0 or pad_left > 0 or xp.shape[1] > xi.shape[1] or xp.shape[2] > xi.shape[2]


@kernel
def _padded(xp, xi, pad_top, pad_left):
    # xi (C, H, W) -> xi itself when the windows fit in it, else xp (C, H_pad, W_pad) filled
    # with xi moved down by pad_top and right by pad_left, zeros around it
    if not _needs_padding(xi, xp, pad_top, pad_left):
        return xi
    rows, cols = _overlap(xi.shape[1], xp.shape[1], pad_top), _overlap(xi.shape[2],
                                                                      xp.shape[2], pad_left)
    xp[:] = 0
    xp[:, rows[0] + pad_top:rows[1] + pad_top, cols[0] + pad_left:cols[1] + pad_left] = \
        xi[:, rows[0]:rows[1], cols[0]:cols[1]]
    return xp


@kernel
def _unpad(dxi, dxp, pad_top, pad_left):
    # dxp (C, H_pad, W_pad) -> dxi (C, H, W): the adjoint of _padded
    rows, cols = _overlap(dxi.shape[1], dxp.shape[1], pad_top), _overlap(dxi.shape[2],
                                                                        dxp.shape[2], pad_left)
    dxi[:] = 0
    dxi[:, rows[0]:rows[1], cols[0]:cols[1]] = \
        dxp[:, rows[0] + pad_top:rows[1] + pad_top, cols[0] + pad_left:cols[1] + pad_left]


@kernel
def _overlap(size, padded_size, pad):
    # The input indices [start, stop) that land inside the padded plane.
    start = min(max(0, -pad), size)
    return start, max(start, min(size, padded_size - pad))


# Stride 1 is passed on as a literal: once the loops are inlined, LLVM compiles them for a
# unit stride, which runs 3x faster than a stride known only at run time.


@kernel
def _im2col(colT, xp, K, stride, H_out, W_out):
    # xp (C, >= H_pad, >= W_pad) -> colT (C*K*K, H'*W'): one row per (c, ky, kx)
    if stride == 1:
        _im2col_loops(colT, xp, K, 1, H_out, W_out)
    else:
        _im2col_loops(colT, xp, K, stride, H_out, W_out)


@kernel
def _im2col_loops(colT, xp, K, stride, H_out, W_out):
    for c in range(xp.shape[0]):
        for ky in range(K):
            for kx in range(K):
                r = (c * K + ky) * K + kx
                for oy in range(H_out):
                    for ox in range(W_out):
                        colT[r, oy * W_out + ox] = xp[c, oy * stride + ky, ox * stride + kx]


@kernel
def _col2im(dxp, colT, K, stride, H_out, W_out):
    # colT (C*K*K, H'*W') -> dxp (C, >= H_pad, >= W_pad): the adjoint of _im2col
    dxp[:] = 0
    if stride == 1:
        _col2im_loops(dxp, colT, K, 1, H_out, W_out)
    else:
        _col2im_loops(dxp, colT, K, stride, H_out, W_out)


@kernel
def _col2im_loops(dxp, colT, K, stride, H_out, W_out):
    for c in range(dxp.shape[0]):
        for ky in range(K):
            for kx in range(K):
                r = (c * K + ky) * K + kx
                for oy in range(H_out):
                    for ox in range(W_out):
                        dxp[c, oy * stride + ky, ox * stride + kx] += colT[r, oy * W_out + ox]


def _warmup(dtype) -> None:
    x, w, b = np.ones((2, 1, 3, 3), dtype), np.ones((2, 1, 2, 2), dtype), np.ones(2, dtype)
    y = np.empty((2, 2, 2, 2), dtype)
    work = np.empty(conv2d_workspace_shape(2, 1, 2, 2, 1, 2, 2), dtype)
    conv2d_forward(y, work, x, w, b, 1, 0, 0)
    conv2d_backward(np.empty_like(x), np.empty_like(w), np.empty_like(b), work, x, y, w, 1, 0,
                    0, True)
