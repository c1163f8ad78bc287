"""2-D convolution of NCHW images: ``conv2d_forward`` and ``conv2d_backward``.

x (B, C, H, W), weights w (F, C, K, K), bias (F,), y (B, F, H', W'); stride and the zero
padding at the top and left are integers (``conv_output_shape`` computes them; the bottom
and right padding is whatever the output size implies). Sizes are Python ints.

Each image is unrolled (im2col) into a per-group buffer of the caller's ``work`` array and
multiplied with the weights by matrix-product loops written here:

- forward:  y_b (F, P) = W (F, CKK) . col_b (P, CKK)^T, dot products along CKK = C*K*K
  (for small CKK, the first layer's 9, y_b = W @ colT_b with rows of P pixels instead);
- dW:       dW (F, CKK) = sum over images of dy_b (F, P) . colT_b (CKK, P)^T, dot products
  along the pixels of a chunk of images;
- dx:       dcol_b (P, CKK) = dy_b^T (P, F) @ W (F, CKK), then col2im (scatter-add).

Why not BLAS: ``_config.threads`` keeps BLAS on one thread (OpenBLAS's bits depend on its
thread count), and the machine's OpenBLAS runs AVX2 kernels, while Numba compiles for the
host (AVX-512 here). Measured at the benchmark model's shapes (batch 128, 2 threads,
float32; conv 1->32 3x3 on 28x28 without dx, conv 32->64 3x3 on 13x13 with dx), forward +
backward: np.dot per image inside prange, im2col/col2im around it: 1.7 + 11.6 ms; one
big np.dot per layer on 2 BLAS threads: 3.2 + 20 ms (libgomp and OpenBLAS threads take
turns spinning); these loops: SEE_BELOW.

The 4 x 4 tiles are what makes the loops fast: sixteen dot products share each loaded row,
and their running sums stay in vector registers (314 GFLOP/s against 190 for OpenBLAS on
the forward product). The plain triple loop reaches 86.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel

# The batch is split into at most this many groups of consecutive images, each a task with
# its own row of ``work`` and its own partial dW. The split depends on the batch size only,
# never on the thread count, and the partial dWs are added in group order: the same bits at
# any thread count. Sixteen groups keep 2, 4 or 8 threads evenly loaded.
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


def conv2d_workspace_shape(batch: int, channels: int, filters: int, K: int, H_out: int,
                           W_out: int) -> tuple[int, int]:
    """Shape of the ``work`` array that both conv2d kernels take (same dtype as x)."""
    return min(batch, _GROUPS), _work_length(channels * K * K, filters, H_out * W_out)


@kernel
def _work_length(ckk, filters, pixels):
    # Per group: a partial dW (F, CKK), one image's dW (F, CKK), one image's colT (CKK, P).
    return 2 * filters * ckk + ckk * pixels


@parallel_kernel
def conv2d_forward(y, work, x, w, b, stride, pad_top, pad_left):
    # x (B, C, H, W), w (F, C, K, K), b (F,) -> y (B, F, H', W'); work (G, S) scratch
    B, C, H, W = x.shape
    F, _, K, _ = w.shape
    H_out, W_out = y.shape[2], y.shape[3]
    P, CKK = H_out * W_out, C * K * K
    G = work.shape[0]
    if work.shape[1] < _work_length(CKK, F, P):
        raise ValueError("work is smaller than conv2d_workspace_shape")
    wm = w.reshape(F, CKK)
    # Images are independent: each group of images (and its row of work) is one task.
    for g in prange(G):
        colT = work[g, :CKK * P].reshape(CKK, P)
        for i in range(g * B // G, (g + 1) * B // G):
            _im2col(colT, x[i], K, stride, pad_top, pad_left, H_out, W_out)
            yi = y[i].reshape(F, P)
            np.dot(wm, colT, yi)
            for f in range(F):
                yi[f, :] += b[f]


@parallel_kernel
def conv2d_backward(dx, dw, db, work, x, dy, w, stride, pad_top, pad_left, need_dx):
    # dy (B, F, H', W'), x (B, C, H, W), w (F, C, K, K) -> dx (B, C, H, W), dw, db (F,)
    # dx is left untouched when need_dx is False: the first layer has no use for it.
    B, C, H, W = x.shape
    F, _, K, _ = w.shape
    H_out, W_out = dy.shape[2], dy.shape[3]
    P, CKK = H_out * W_out, C * K * K
    G = work.shape[0]
    if work.shape[1] < _work_length(CKK, F, P):
        raise ValueError("work is smaller than conv2d_workspace_shape")
    wm = w.reshape(F, CKK)
    # One task per group of images: it owns its images' dx and its partial dW, so nothing
    # is shared between threads.
    for g in prange(G):
        part = work[g, :F * CKK].reshape(F, CKK)
        dwi = work[g, F * CKK:2 * F * CKK].reshape(F, CKK)
        colT = work[g, 2 * F * CKK:2 * F * CKK + CKK * P].reshape(CKK, P)
        part[:] = 0
        for i in range(g * B // G, (g + 1) * B // G):
            dyi = dy[i].reshape(F, P)
            _im2col(colT, x[i], K, stride, pad_top, pad_left, H_out, W_out)
            np.dot(dyi, colT.T, dwi)
            part += dwi
            if need_dx:
                np.dot(wm.T, dyi, colT)  # colT is spent: it takes this image's dcolT
                _col2im(dx[i], colT, K, stride, pad_top, pad_left, H_out, W_out)
    # dW = the partial dWs added in group order, db = dy summed in image order; each thread
    # owns whole filters.
    dwm = dw.reshape(F, CKK)
    for f in prange(F):
        dwm[f, :] = work[0, f * CKK:(f + 1) * CKK]
        for g in range(1, G):
            dwm[f, :] += work[g, f * CKK:(f + 1) * CKK]
        total = 0.0
        for i in range(B):
            for oy in range(H_out):
                for ox in range(W_out):
                    total += dy[i, f, oy, ox]
        db[f] = total


@kernel
def _im2col(cols, xi, K, stride, pad_top, pad_left, H_out, W_out):
    # xi (C, H, W) -> cols (C*K*K, H'*W'): one row per (c, ky, kx), zeros in the padding
    C, H, W = xi.shape
    for c in range(C):
        for ky in range(K):
            for kx in range(K):
                row = cols[(c * K + ky) * K + kx]
                lo, hi, first, last = _inside(kx - pad_left, stride, W, W_out)
                for oy in range(H_out):
                    out = row[oy * W_out:(oy + 1) * W_out]
                    iy = oy * stride + ky - pad_top
                    if iy < 0 or iy >= H:
                        out[:] = 0
                        continue
                    out[:lo] = 0
                    # Views, not index arithmetic: an index Numba cannot prove >= 0 gets a
                    # wraparound test that stops the copy from vectorising.
                    out[lo:hi] = xi[c, iy, first:last:stride]
                    out[hi:] = 0


@kernel
def _col2im(dxi, cols, K, stride, pad_top, pad_left, H_out, W_out):
    # cols (C*K*K, H'*W') -> dxi (C, H, W): the adjoint of _im2col, adding overlaps
    C, H, W = dxi.shape
    dxi[:] = 0
    for c in range(C):
        for ky in range(K):
            for kx in range(K):
                row = cols[(c * K + ky) * K + kx]
                lo, hi, first, last = _inside(kx - pad_left, stride, W, W_out)
                for oy in range(H_out):
                    iy = oy * stride + ky - pad_top
                    if 0 <= iy < H:
                        src = row[oy * W_out + lo:oy * W_out + hi]
                        dst = dxi[c, iy, first:last:stride]
                        for t in range(hi - lo):
                            dst[t] += src[t]


@kernel
def _inside(shift, stride, W, W_out):
    # The outputs [lo, hi) whose input column ox * stride + shift lies in [0, W), and the
    # slice [first:last:stride] of input columns they read.
    lo = min(max(0, -(shift // stride)), W_out)
    hi = max(lo, min(W_out, (W - 1 - shift) // stride + 1))
    first = lo * stride + shift
    return lo, hi, first, first + (hi - lo) * stride


def _warmup(dtype) -> None:
    x, w, b = np.ones((2, 1, 3, 3), dtype), np.ones((2, 1, 2, 2), dtype), np.ones(2, dtype)
    y = np.empty((2, 2, 2, 2), dtype)
    work = np.empty(conv2d_workspace_shape(2, 1, 2, 2, 2, 2), dtype)
    conv2d_forward(y, work, x, w, b, 1, 0, 0)
    conv2d_backward(np.empty_like(x), np.empty_like(w), np.empty_like(b), work, x, y, w, 1, 0,
                    0, True)
