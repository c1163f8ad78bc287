"""2-D convolution of NCHW images: ``conv2d_forward`` and ``conv2d_backward``.

x (B, C, H, W), weights w (F, C, K, K), bias (F,), y (B, F, H', W'). Stride and the zero
padding at the top and left are integers (``conv_output_shape`` computes them; the bottom
and right padding is whatever the output size implies); sizes are Python ints. Arrays are
C-contiguous. ``work`` is the caller's scratch, shaped by ``conv2d_workspace_shape``.

im2col, then one matrix product per few images (P = H' * W' pixels, CKK = C * K * K;
colT holds the images' columns side by side and ends with a row of ones, so that the
product adds the bias and sums db too):

- forward:  y (F, n P) = (W | b) (F, CKK + 1) @ colT (CKK + 1, n P);
- dW, db:   (dW | db) = sum over the products of dy (F, n P) @ colT.T;
- dx:       dcolT (CKK, n P) = W.T @ dy, then col2im (the adjoint of im2col).

The images are split into fixed groups; each prange task has a slot of the scratch and runs
every T-th group (T slots), its products one after another in gemm.matmul (Numba); BLAS is
not used. Measured at the benchmark model's shapes (batch 128, float32, 2 threads; conv1
1->32 3x3 on 28x28 without dx, conv2 32->64 3x3 on 13x13 with dx), forward + backward,
medians, before the scratch was per thread (since then, see docs/architecture.md):

- this design: conv1 0.36 + 0.72 ms, conv2 1.9 + 4.4 ms;
- the same with matmul's older row updates and (dW | db) in BLAS: conv2 2.7 + 6.5 ms;
- every product in BLAS, one image at a time: conv2 3.5 + 6.7 ms;
- one big product per layer, (F, CKK) @ (CKK, B * P): BLAS is on one thread, so conv2's
  three products alone take 15 ms.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel
from .activation import IDENTITY, RELU, activate_row
from .gemm import matmul, matmul_nt

# The batch is split into at most this many groups of consecutive images, each with its own
# partial (dW | db). The split depends on the batch size only, never on the thread count,
# and the partials are added in group order: the same bits at any thread count. Sixteen
# groups keep 2, 4 or 8 threads evenly loaded.
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
                           H_out: int, W_out: int, threads: int | None = None) -> tuple[int]:
    """Shape of the ``work`` array that both conv2d kernels take (dtype of x).

    It serves any batch of at most ``batch`` images on at most ``threads`` threads (default:
    the most Numba can run, ``numba.config.NUMBA_NUM_THREADS``).
    """
    groups = _n_groups(batch)
    slots = min(groups, threads or numba.config.NUMBA_NUM_THREADS)
    slot = _slot_length(_chunk(batch, groups, H_out * W_out), channels, filters, K, stride,
                        H_out, W_out)
    return (groups * _partial_length(channels * K * K, filters) + slots * slot,)


# The layout of ``work``: the groups' partial (dW | db) one after another, then one slot of
# scratch per thread for the images of the groups that thread runs (one prange task per
# slot: fewer slots than threads would leave threads idle). Slots per thread rather than per
# group keep the scratch in the cache from group to group, and take less memory (conv2 of
# the benchmark model: 2 MB rather than 16).


@kernel
def _n_groups(B):
    # One group per image at most: a smaller batch than the work was made for (one image
    # to predict) leaves out the groups that would have none, and their set-up (copying W).
    # Images fall into the same groups either way.
    return max(1, min(_GROUPS, B))


@kernel
def _chunk(B, G, P):
    # Images per product: enough for _COLUMNS columns, at most the most a group has
    return min(-(-B // G), -(-_COLUMNS // P))


@kernel
def _partial_length(CKK, F):
    # A group's partial (dW | db): F * (CKK + 1) values, the groups' one after another
    return F * (CKK + 1)


@kernel
def _slot_length(images, C, F, K, stride, H_out, W_out):
    # For products of this many images: see _weight_scratch and _image_scratch
    CKK1, P = C * K * K + 1, H_out * W_out
    H_pad, W_pad = (H_out - 1) * stride + K, (W_out - 1) * stride + K
    return (F * CKK1 + (CKK1 - 1) * F + CKK1 * images * P + F * images * P
            + _dy_transposed_rows(F, CKK1) * images * P + C * H_pad * W_pad)


@kernel
def _layout(work, B, C, F, K, stride, H_out, W_out):
    # (groups, slots, a slot's length) for a batch of B: as many slots as the work holds
    # after the partials, at most one per group. (The thread count is not read in here: a
    # kernel that calls numba.get_num_threads cannot be cached.)
    G = _n_groups(B)
    S = _slot_length(_chunk(B, G, H_out * W_out), C, F, K, stride, H_out, W_out)
    T = min(G, (work.size - G * _partial_length(C * K * K, F)) // S)
    if T < 1:
        raise ValueError("work is smaller than conv2d_workspace_shape")
    return G, T, S


@kernel
def _sizes(work, x, w, stride, H_out, W_out):
    # (B, C, F, K, CKK, P, G, T, S) of a call: the sizes of x and w, and the layout
    B, C, F, K = x.shape[0], x.shape[1], w.shape[0], w.shape[2]
    G, T, S = _layout(work, B, C, F, K, stride, H_out, W_out)
    return B, C, F, K, C * K * K, H_out * W_out, G, T, S


@kernel
def _partial(work, g, CKK, F):
    # Group g's partial (dW | db) (F, CKK + 1), where conv2d_backward adds up its products
    # (laid out transposed, (CKK + 1, F), when _dw_transposed)
    n = _partial_length(CKK, F)
    return work[g * n:(g + 1) * n].reshape(F, CKK + 1)


@kernel
def _slot(work, t, G, S, CKK, F):
    # Thread slot t of the work
    start = G * _partial_length(CKK, F) + t * S
    return work[start:start + S]


@kernel
def _weight_scratch(slot, CKK, F):
    # The first views of a slot, the same for every product:
    # - wb (F, CKK + 1): (W | b) in the forward pass, a product's term of (dW | db) in the
    #   backward pass (laid out like the partials);
    # - wT (CKK, F): W transposed, for dx.
    n = F * (CKK + 1)
    return slot[:n].reshape(F, CKK + 1), slot[n:n + CKK * F].reshape(CKK, F)


@kernel
def _image_scratch(slot, images, C, F, K, stride, H_out, W_out):
    # The rest of the slot, for a product of this many images:
    # - colT (CKK + 1, images, P): the images' im2col side by side, so that one product
    #   covers them all, with a last row of ones for the bias;
    # - out (F, images, P): the product, or the images' dy gathered;
    # - flat (images * P * F,): dy transposed, for (dW | db).T, or nothing where that is
    #   computed as it is (_dw_transposed);
    # - xp (C, H_pad, W_pad): the zero-padded image.
    CKK1, P = C * K * K + 1, H_out * W_out
    H_pad, W_pad = (H_out - 1) * stride + K, (W_out - 1) * stride + K
    start = F * CKK1 + (CKK1 - 1) * F
    end_colT = start + CKK1 * images * P
    end_out = end_colT + F * images * P
    end_flat = end_out + _dy_transposed_rows(F, CKK1) * images * P
    return (slot[start:end_colT].reshape(CKK1, images, P),
            slot[end_colT:end_out].reshape(F, images, P),
            slot[end_out:end_flat],
            slot[end_flat:end_flat + C * H_pad * W_pad].reshape(C, H_pad, W_pad))


@kernel
def _columns(colT, xp, x, first, n, pad_top, pad_left, K, stride, H_out, W_out, pooled):
    # Images x[first:first + n] -> colT (CKK + 1, n, P): im2col of each (in pool order when
    # pooled, for an even H' and W'), then the ones
    colT[colT.shape[0] - 1] = 1
    for i in range(n):
        xi = _padded(xp, x[first + i], pad_top, pad_left)
        if pooled:
            _im2col_pooled(colT, i, xi, K, stride, H_out // 2, W_out // 2)
        else:
            _im2col(colT, i, xi, K, stride, H_out, W_out)


# The products run in gemm (Numba, ~2x OpenBLAS's AVX2 kernels at these shapes):
# Y = (W | b) @ colT, dcolT = W.T @ dy and (dW | db) = dy @ colT.T. matmul wants its right
# factor row by row: where F <= CKK + 1 (conv2: F 64, CKK + 1 289) the last product is
# (dW | db).T = colT @ dy.T, from a transposed copy of dy; where F is the larger (conv1: 32
# and 10) it is matmul_nt's dot products of rows of dy and colT (0.92 -> 0.60 ms for
# conv1's backward pass at batch 128, against matmul with a copy of colT transposed, whose
# 10 columns a tile pads to 32).
# A product covers whole images, at least _COLUMNS columns (conv2: 4 images of 121 pixels,
# conv1: one of 676): wide enough for the vector loops, small enough that colT stays in the
# L2 cache between im2col and the product (a group's 8 images at once: 20% slower).
_COLUMNS = 448


@parallel_kernel
def conv2d_forward(y, work, x, w, b, stride, pad_top, pad_left, activation=IDENTITY):
    # x (B, C, H, W), w (F, C, K, K), b (F,) -> y (B, F, H', W'); work: the scratch.
    # activation (a code of kernels.activation) is applied to y image by image while the
    # image is still in the cache: the pass over the whole of y that an Activation layer
    # would make costs more (cnn-keras's two ReLUs: 0.4 ms a batch of 128).
    B, C, F, K, CKK, P, G, T, S = _sizes(work, x, w, stride, y.shape[2], y.shape[3])
    H_out, W_out = y.shape[2], y.shape[3]
    # Images are independent: each task runs every T-th group in its own slot of work.
    for t in prange(T):
        slot = _slot(work, t, G, S, CKK, F)
        wb = _weights_with_bias(slot, w, b)
        for g in range(t, G, T):
            for first, n in _chunks(g, G, B, P):
                colT, out, _, xp = _image_scratch(slot, n, C, F, K, stride, H_out, W_out)
                _columns(colT, xp, x, first, n, pad_top, pad_left, K, stride, H_out, W_out,
                         False)
                # One image's product goes straight into y; several are moved there after.
                product = y[first].reshape(F, P) if n == 1 else out.reshape(F, n * P)
                matmul(product, wb, colT.reshape(CKK + 1, n * P))
                for i in range(n):
                    yi = y[first + i].reshape(F, P)
                    if n > 1:
                        for f in range(F):
                            yi[f] = out[f, i]
                    if activation != IDENTITY:
                        flat = yi.reshape(F * P)
                        activate_row(flat, flat, activation)


@parallel_kernel
def conv2d_backward(dx, dw, db, work, x, dy, w, stride, pad_top, pad_left, need_dx):
    # dy (B, F, H', W'), x (B, C, H, W), w (F, C, K, K) -> dx (B, C, H, W), dw, db (F,)
    # dx is left untouched when need_dx is False: the first layer has no use for it.
    B, C, F, K, CKK, P, G, T, S = _sizes(work, x, w, stride, dy.shape[2], dy.shape[3])
    H_out, W_out = dy.shape[2], dy.shape[3]
    # Each task runs every T-th group in its own slot of work: a group's images' dx and its
    # partial (dW | db) belong to it alone, so nothing is shared between threads.
    for t in prange(T):
        slot = _slot(work, t, G, S, CKK, F)
        term, wT = _backward_scratch(slot, w, need_dx)
        for g in range(t, G, T):
            part = _zeroed_partial(work, g, CKK, F)
            for first, n in _chunks(g, G, B, P):
                colT, dyg, flat, xp = _image_scratch(slot, n, C, F, K, stride, H_out, W_out)
                _columns(colT, xp, x, first, n, pad_top, pad_left, K, stride, H_out, W_out,
                         False)
                # One image's dy is used where it is; several are gathered side by side.
                dyg2 = dy[first].reshape(F, P) if n == 1 else dyg.reshape(F, n * P)
                if n > 1:
                    for i in range(n):
                        dyi = dy[first + i].reshape(F, P)
                        for f in range(F):
                            dyg[f, i] = dyi[f]
                _chunk_gradients(dx, part, term, wT, colT, dyg2, flat, xp, first, pad_top,
                                 pad_left, K, stride, H_out, W_out, need_dx, False)
    # (dW | db) = the partial ones added in group order; each thread owns whole filters.
    for f in prange(F):
        _sum_partials(dw, db, work, f, G)


@kernel
def _weights_with_bias(slot, w, b):
    # (W | b) (F, CKK + 1) in the slot, for the forward products
    F, CKK = w.shape[0], w.size // w.shape[0]
    wb, _ = _weight_scratch(slot, CKK, F)
    wb[:, :CKK] = w.reshape(F, CKK)
    wb[:, CKK] = b
    return wb


@kernel
def _backward_scratch(slot, w, need_dx):
    # (term, wT): the slot's scratch for a product's (dW | db), and W transposed (CKK, F),
    # filled only when dx is wanted
    F, CKK = w.shape[0], w.size // w.shape[0]
    term, wT = _weight_scratch(slot, CKK, F)
    if need_dx:
        wT[:] = w.reshape(F, CKK).T
    return term, wT


@kernel
def _zeroed_partial(work, g, CKK, F):
    part = _partial(work, g, CKK, F)
    part[:] = 0
    return part


@kernel
def _chunk_gradients(dx, part, term, wT, colT, dyg2, flat, xp, first, pad_top, pad_left, K,
                     stride, H_out, W_out, need_dx, pooled):
    # A product's share of the gradients, from its images' dy, dyg2 (F, n P), and their
    # columns colT (CKK + 1, n, P), in pool order when pooled: its (dW | db) added to the
    # group's partial, and, when need_dx, the images' dx[first:first + n] (colT is spent:
    # it takes the dcolT).
    CKK, n = wT.shape[0], colT.shape[1]
    colT2 = colT.reshape(CKK + 1, n * H_out * W_out)
    _add_dw_term(part, term, colT2, dyg2, flat)
    if not need_dx:
        return
    matmul(colT2[:CKK], wT, dyg2)
    for i in range(n):
        dxi = dx[first + i]
        padded = _needs_padding(dxi, xp, pad_top, pad_left)
        dxp = xp if padded else dxi
        if pooled:
            _col2im_pooled(dxp, colT, i, K, stride, H_out // 2, W_out // 2)
        else:
            _col2im(dxp, colT, i, K, stride, H_out, W_out)
        if padded:
            _unpad(dxi, xp, pad_top, pad_left)


@kernel
def _add_dw_term(part, term, colT2, dyg2, flat):
    # part (laid out as _partial) += (dW | db) of one product: dyg2 (F, cols) the images'
    # dy, colT2 (CKK + 1, cols) their columns; term and flat are scratch
    F, CKK1, cols = dyg2.shape[0], colT2.shape[0], dyg2.shape[1]
    if _dw_transposed(F, CKK1 - 1):
        dyT = flat[:cols * F].reshape(cols, F)
        _transpose(dyT, dyg2)
        matmul(term.reshape(CKK1, F), colT2, dyT)
    else:
        matmul_nt(term, dyg2, colT2)
    _add(part.reshape(part.size), term.reshape(term.size))


@kernel
def _sum_partials(dw, db, work, f, G):
    # Filter f's row of (dW | db): the G groups' partials added in group order
    F, CKK = dw.shape[0], dw.size // dw.shape[0]
    transposed = _dw_transposed(F, CKK)
    dwf, n = dw[f].reshape(CKK), _partial_length(CKK, F)
    for k in range(CKK + 1):
        at = k * F + f if transposed else f * (CKK + 1) + k
        total = work[at]
        for g in range(1, G):
            total += work[g * n + at]
        if k < CKK:
            dwf[k] = total
        else:
            db[f] = total


@kernel
def _chunks(g, G, B, P):
    # Group g's images, [g * B // G, (g + 1) * B // G), as (first, count) of at most the
    # size of _chunk(B, G, P)
    first, stop = g * B // G, (g + 1) * B // G
    size = _chunk(B, G, P)
    return [(start, min(size, stop - start)) for start in range(first, stop, size)]


@kernel
def _dw_transposed(F, CKK):
    # Whether (dW | db) is computed transposed, as colT @ dy.T (see the products above)
    return F <= CKK + 1


@kernel
def _dy_transposed_rows(F, CKK1):
    # Rows of the slot's ``flat``, in pixels: F where dy is transposed for (dW | db), else 0
    return F if _dw_transposed(F, CKK1 - 1) else 0


@kernel
def _transpose(outT, out):
    # out (R, n) -> outT (n, R)
    for r in range(out.shape[0]):
        for p in range(out.shape[1]):
            outT[p, r] = out[r, p]


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
def _im2col(colT, i, xp, K, stride, H_out, W_out):
    # xp (C, >= H_pad, >= W_pad) -> colT[:C*K*K, i] (C*K*K, H'*W'): a row per (c, ky, kx)
    if stride == 1:
        _im2col_loops(colT, i, xp, K, 1, H_out, W_out)
    else:
        _im2col_loops(colT, i, xp, K, stride, H_out, W_out)


@kernel
def _im2col_loops(colT, i, xp, K, stride, H_out, W_out):
    for c in range(xp.shape[0]):
        for ky in range(K):
            for kx in range(K):
                row = colT[(c * K + ky) * K + kx, i]
                for oy in range(H_out):
                    for ox in range(W_out):
                        row[oy * W_out + ox] = xp[c, oy * stride + ky, ox * stride + kx]


@kernel
def _col2im(dxp, colT, i, K, stride, H_out, W_out):
    # colT[:C*K*K, i] (C*K*K, H'*W') -> dxp (C, >= H_pad, >= W_pad): the adjoint of _im2col
    dxp[:] = 0
    if stride == 1:
        _col2im_loops(dxp, colT, i, K, 1, H_out, W_out)
    else:
        _col2im_loops(dxp, colT, i, K, stride, H_out, W_out)


@kernel
def _col2im_loops(dxp, colT, i, K, stride, H_out, W_out):
    for c in range(dxp.shape[0]):
        for ky in range(K):
            for kx in range(K):
                row = colT[(c * K + ky) * K + kx, i]
                for oy in range(H_out):
                    for ox in range(W_out):
                        dxp[c, oy * stride + ky, ox * stride + kx] += row[oy * W_out + ox]


# Pool order (kernels.conv_pool): of a 2x2 max pool's input, with stride 2, only the pixels
# in a window, by their place in it (top left, top right, bottom left, bottom right), each
# place a (H' // 2, W' // 2) plane. A window's four values then sit at the same index of
# four contiguous runs, so that pooling and unpooling run in vector loops; a last row or
# column that no window covers (odd H' or W') is not computed at all.


@kernel
def _pool_order(Hp, Wp, stride, W_plane):
    # The offset in a plane W_plane wide of each pixel in pool order, for the tap (0, 0):
    # a product's column j reads the plane at _pool_order(...)[j] + ky * W_plane + kx
    Q = Hp * Wp
    at = np.empty(4 * Q, np.int64)
    for place in range(4):
        sy, sx = place // 2, place % 2
        for py in range(Hp):
            for px in range(Wp):
                at[place * Q + py * Wp + px] = ((2 * py + sy) * W_plane + 2 * px + sx) * stride
    return at


@kernel
def _im2col_pooled(colT, i, xp, K, stride, Hp, Wp):
    # xp (C, >= H_pad, >= W_pad) -> colT[:C*K*K, i] (C*K*K, 4 Hp Wp), in pool order: one
    # loop of 4 Hp Wp for each row, through a table of offsets (nested loops over runs of
    # Wp, 5 for cnn-keras's second layer, took 3.5x as long; copying the runs that an
    # earlier place had read already, 1.7x)
    C, H, W = xp.shape
    at = _pool_order(Hp, Wp, stride, W)
    for c in range(C):
        plane = xp[c].reshape(H * W)
        for ky in range(K):
            for kx in range(K):
                row, tap = colT[(c * K + ky) * K + kx, i], ky * W + kx
                for j in range(at.size):
                    row[j] = plane[tap + at[j]]


@kernel
def _col2im_pooled(dxp, colT, i, K, stride, Hp, Wp):
    # colT[:C*K*K, i] in pool order -> dxp (C, >= H_pad, >= W_pad): the adjoint of
    # _im2col_pooled. A row's offsets are distinct, so its sums come in the order of
    # _col2im's.
    C, H, W = dxp.shape
    dxp[:] = 0
    at = _pool_order(Hp, Wp, stride, W)
    for c in range(C):
        plane = dxp[c].reshape(H * W)
        for ky in range(K):
            for kx in range(K):
                row, tap = colT[(c * K + ky) * K + kx, i], ky * W + kx
                for j in range(at.size):
                    plane[tap + at[j]] += row[j]


def _warmup(dtype) -> None:
    x, w, b = np.ones((2, 1, 3, 3), dtype), np.ones((2, 1, 2, 2), dtype), np.ones(2, dtype)
    y = np.empty((2, 2, 2, 2), dtype)
    work = np.empty(conv2d_workspace_shape(2, 1, 2, 2, 1, 2, 2), dtype)
    conv2d_forward(y, work, x, w, b, 1, 0, 0)
    conv2d_forward(y, work, x, w, b, 1, 0, 0, RELU)
    conv2d_backward(np.empty_like(x), np.empty_like(w), np.empty_like(b), work, x, y, w, 1, 0,
                    0, True)
