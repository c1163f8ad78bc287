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

# The batch is split into at most this many groups of consecutive images, each with its own
# slice of ``work`` and its own partial dW. The split depends on the batch size only, never
# on the thread count, and the partial dWs are added in group order: same bits at any
# thread count. Sixteen groups keep 2, 4 or 8 threads evenly loaded.
_GROUPS = 16

# dW is summed over chunks of images whose unrolled pixels (CKK x about this many) stay in
# the per-core L2 cache: 4 images of 11x11 outputs, 1 of 26x26.
_CHUNK_PIXELS = 512

# Below this many products per output (C*K*K), the forward pass sums along rows of pixels
# instead of along C*K*K: a dot product shorter than a vector register does not vectorise.
_MIN_DOT_LENGTH = 32


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
    groups = min(batch, _GROUPS)
    return groups, _work_length(batch, groups, channels, filters, K, H_out * W_out)


@kernel
def _work_length(batch, groups, channels, filters, K, pixels):
    # A partial dW, then room for a chunk of images' dy (F, L) and colT (CKK, L).
    ckk = channels * K * K
    return filters * ckk + _chunk_images(batch, groups, pixels) * pixels * (filters + ckk)


@kernel
def _chunk_images(batch, groups, pixels):
    per_group = (batch + groups - 1) // groups
    return max(1, min(per_group, _CHUNK_PIXELS // pixels))


@parallel_kernel
def conv2d_forward(y, work, x, w, b, stride, pad_top, pad_left):
    # x (B, C, H, W), w (F, C, K, K), b (F,) -> y (B, F, H', W'); work (G, S) scratch
    B, C, H, W = x.shape
    F, _, K, _ = w.shape
    H_out, W_out = y.shape[2], y.shape[3]
    P, CKK = H_out * W_out, C * K * K
    G = work.shape[0]
    if work.shape[1] < _work_length(B, G, C, F, K, P):
        raise ValueError("work is smaller than conv2d_workspace_shape")
    wm = w.reshape(F, CKK)
    # Images are independent: each group of images (and its slice of work) is one task.
    for g in prange(G):
        for i in range(g * B // G, (g + 1) * B // G):
            yi = y[i].reshape(F, P)
            for f in range(F):
                yi[f, :] = b[f]
            if CKK >= _MIN_DOT_LENGTH:
                col = work[g, :P * CKK].reshape(P, CKK)
                _im2col(col.T, 0, x[i], K, stride, pad_top, pad_left, H_out, W_out)
                _matmul_nt_acc(yi, wm, col)
            else:
                colT = work[g, :CKK * P].reshape(CKK, P)
                _im2col(colT, 0, x[i], K, stride, pad_top, pad_left, H_out, W_out)
                _matmul_nn_acc(yi, wm, colT)


@parallel_kernel
def conv2d_backward(dx, dw, db, work, x, dy, w, stride, pad_top, pad_left, need_dx):
    # dy (B, F, H', W'), x (B, C, H, W), w (F, C, K, K) -> dx (B, C, H, W), dw, db (F,)
    # dx is left untouched when need_dx is False: the first layer has no use for it.
    B, C, H, W = x.shape
    F, _, K, _ = w.shape
    H_out, W_out = dy.shape[2], dy.shape[3]
    P, CKK = H_out * W_out, C * K * K
    G = work.shape[0]
    if work.shape[1] < _work_length(B, G, C, F, K, P):
        raise ValueError("work is smaller than conv2d_workspace_shape")
    wm = w.reshape(F, CKK)
    n = _chunk_images(B, G, P)
    # One task per group of images: it owns its images' dx and its partial dW (the first
    # F * CKK values of its work row), so nothing is shared between threads.
    for g in prange(G):
        part = work[g, :F * CKK].reshape(F, CKK)
        part[:] = 0
        last = (g + 1) * B // G
        for first in range(g * B // G, last, n):
            m = min(n, last - first)
            L = m * P
            dz = work[g, F * CKK:F * CKK + F * L].reshape(F, L)
            colT = work[g, F * CKK + F * L:F * CKK + (F + CKK) * L].reshape(CKK, L)
            for i in range(m):
                dz[:, i * P:(i + 1) * P] = dy[first + i].reshape(F, P)
                _im2col(colT, i * P, x[first + i], K, stride, pad_top, pad_left, H_out,
                        W_out)
            _matmul_nt_acc(part, dz, colT)
            if need_dx:
                # The chunk's dz and colT are spent: their space holds each image's dcol.
                dcol = work[g, F * CKK:F * CKK + P * CKK].reshape(P, CKK)
                for i in range(first, first + m):
                    dcol[:] = 0
                    _matmul_nn_acc(dcol, dy[i].reshape(F, P).T, wm)
                    _col2im(dx[i], dcol.T, K, stride, pad_top, pad_left, H_out, W_out)
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
def _im2col(cols, offset, xi, K, stride, pad_top, pad_left, H_out, W_out):
    # xi (C, H, W) -> cols (C*K*K, offset + H'*W'): one row per (c, ky, kx), any strides
    C, H, W = xi.shape
    zero = cols.dtype.type(0)
    for c in range(C):
        for ky in range(K):
            for kx in range(K):
                r = (c * K + ky) * K + kx
                lo, hi = _inside(kx - pad_left, stride, W, W_out)
                for oy in range(H_out):
                    iy = oy * stride + ky - pad_top
                    p = offset + oy * W_out
                    if iy < 0 or iy >= H:
                        cols[r, p:p + W_out] = zero
                        continue
                    for ox in range(lo):
                        cols[r, p + ox] = zero
                    for ox in range(lo, hi):
                        cols[r, p + ox] = xi[c, iy, ox * stride + kx - pad_left]
                    for ox in range(hi, W_out):
                        cols[r, p + ox] = zero


@kernel
def _col2im(dxi, cols, K, stride, pad_top, pad_left, H_out, W_out):
    # cols (C*K*K, H'*W') -> dxi (C, H, W): the adjoint of _im2col, summing overlaps
    C, H, W = dxi.shape
    dxi[:] = 0
    for c in range(C):
        for ky in range(K):
            for kx in range(K):
                r = (c * K + ky) * K + kx
                lo, hi = _inside(kx - pad_left, stride, W, W_out)
                for oy in range(H_out):
                    iy = oy * stride + ky - pad_top
                    if 0 <= iy < H:
                        p = oy * W_out
                        for ox in range(lo, hi):
                            dxi[c, iy, ox * stride + kx - pad_left] += cols[r, p + ox]


@kernel
def _inside(shift, stride, W, W_out):
    # The outputs ox in [lo, hi) whose input column ox * stride + shift lies in [0, W).
    lo = min(max(0, -(shift // stride)), W_out)
    hi = min(W_out, (W - 1 - shift) // stride + 1)
    return lo, max(lo, hi)


@kernel
def _matmul_nt_acc(c, a, b):
    # a (M, K), b (N, K) -> c (M, N) += a @ b.T; rows of a and b contiguous
    # A 4 x 4 tile of c at a time: each row loaded feeds four dot products, and the sixteen
    # running sums (vectors, with fast-math's reassociation) stay in registers.
    M, K = a.shape
    N = b.shape[0]
    M4, N4 = M - M % 4, N - N % 4
    zero = c.dtype.type(0)
    for i in range(0, M4, 4):
        a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        for j in range(0, N4, 4):
            b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for k in range(K):
                s00 += a0[k] * b0[k]
                s01 += a0[k] * b1[k]
                s02 += a0[k] * b2[k]
                s03 += a0[k] * b3[k]
                s10 += a1[k] * b0[k]
                s11 += a1[k] * b1[k]
                s12 += a1[k] * b2[k]
                s13 += a1[k] * b3[k]
                s20 += a2[k] * b0[k]
                s21 += a2[k] * b1[k]
                s22 += a2[k] * b2[k]
                s23 += a2[k] * b3[k]
                s30 += a3[k] * b0[k]
                s31 += a3[k] * b1[k]
                s32 += a3[k] * b2[k]
                s33 += a3[k] * b3[k]
            c[i, j] += s00
            c[i, j + 1] += s01
            c[i, j + 2] += s02
            c[i, j + 3] += s03
            c[i + 1, j] += s10
            c[i + 1, j + 1] += s11
            c[i + 1, j + 2] += s12
            c[i + 1, j + 3] += s13
            c[i + 2, j] += s20
            c[i + 2, j + 1] += s21
            c[i + 2, j + 2] += s22
            c[i + 2, j + 3] += s23
            c[i + 3, j] += s30
            c[i + 3, j + 1] += s31
            c[i + 3, j + 2] += s32
            c[i + 3, j + 3] += s33
    # The edges: columns past N4 of the tiled rows, then every column of the last rows.
    for i in range(M):
        for j in range(N4 if i < M4 else 0, N):
            s = zero
            for k in range(K):
                s += a[i, k] * b[j, k]
            c[i, j] += s


@kernel
def _matmul_nn_acc(c, a, b):
    # a (M, K), b (K, N) -> c (M, N) += a @ b; rows of b and c contiguous, a any strides
    # Four rows of c take four rows of b at a time: 16 multiply-adds per element loaded or
    # stored, where one row at a time does a load and a store per multiply-add.
    M, K = a.shape
    N = b.shape[1]
    M4, K4 = M - M % 4, K - K % 4
    for i in range(0, M4, 4):
        c0, c1, c2, c3 = c[i], c[i + 1], c[i + 2], c[i + 3]
        for k in range(0, K4, 4):
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            a00, a01, a02, a03 = a[i, k], a[i, k + 1], a[i, k + 2], a[i, k + 3]
            a10, a11, a12, a13 = a[i + 1, k], a[i + 1, k + 1], a[i + 1, k + 2], a[i + 1, k + 3]
            a20, a21, a22, a23 = a[i + 2, k], a[i + 2, k + 1], a[i + 2, k + 2], a[i + 2, k + 3]
            a30, a31, a32, a33 = a[i + 3, k], a[i + 3, k + 1], a[i + 3, k + 2], a[i + 3, k + 3]
            for j in range(N):
                c0[j] += a00 * b0[j] + a01 * b1[j] + a02 * b2[j] + a03 * b3[j]
                c1[j] += a10 * b0[j] + a11 * b1[j] + a12 * b2[j] + a13 * b3[j]
                c2[j] += a20 * b0[j] + a21 * b1[j] + a22 * b2[j] + a23 * b3[j]
                c3[j] += a30 * b0[j] + a31 * b1[j] + a32 * b2[j] + a33 * b3[j]
        for k in range(K4, K):
            bk = b[k]
            a0, a1, a2, a3 = a[i, k], a[i + 1, k], a[i + 2, k], a[i + 3, k]
            for j in range(N):
                c0[j] += a0 * bk[j]
                c1[j] += a1 * bk[j]
                c2[j] += a2 * bk[j]
                c3[j] += a3 * bk[j]
    for i in range(M4, M):
        ci = c[i]
        for k in range(K):
            aik, bk = a[i, k], b[k]
            for j in range(N):
                ci[j] += aik * bk[j]


def _warmup(dtype) -> None:
    x, w, b = np.ones((2, 1, 3, 3), dtype), np.ones((2, 1, 2, 2), dtype), np.ones(2, dtype)
    y = np.empty((2, 2, 2, 2), dtype)
    work = np.empty(conv2d_workspace_shape(2, 1, 2, 2, 2, 2), dtype)
    conv2d_forward(y, work, x, w, b, 1, 0, 0)
    conv2d_backward(np.empty_like(x), np.empty_like(w), np.empty_like(b), work, x, y, w, 1, 0,
                    0, True)
