"""A matrix product in Numba, C = A @ B, for the convolutions' and the MLP's products.

Why not BLAS: the OpenBLAS that NumPy ships picks its kernels from the machine's
``OPENBLAS_CORETYPE`` (AVX2 here, on a CPU with AVX-512), while Numba compiles for the host
CPU. One core, ``pytest bench/test_bench_kernels.py -k matmul``: 230 GFLOP/s at conv2's
forward product and 260 at mlp-seed's first layer, against OpenBLAS's 110-120.

How: C is computed 8 rows x 32 columns at a time in a register tile, a small array on the
stack that LLVM keeps in vector registers because the loops that touch it are unrolled
(``_tile``); each step of k loads 32 elements of B once for 8 rows, broadcasts 8 of A, and
C is stored once at the end. Four to seven rows left over go through a half tile (the
tile's first 4 rows). Products with short k, and the rows the tiles leave over, go through
row updates instead (``_matmul_rows``: C updated in memory, 8 rows and 4 steps of k a
pass), or one-row tiles (``_row_tile``) where N is a multiple of 64.

Without fast-math's "reassoc" (left out so that every build rounds alike) both paths work
along rows of B and C, whose iterations are independent, so LLVM vectorises them as they
are. Each C[i, j] is accumulated over k in order, one ``fma`` at a time, in both: the result
has the same bits whichever path or split computes it, and on any number of threads.

Narrow products (at most 16 columns: a classifier's logits) go their own way
(``_matmul_narrow``): one vector of C's row, but a single chain of fmas over k would wait
on each one (cnn-keras's 1600 -> 10 of one image: 2.8 us), so each C[i, j] is summed in 4
chains, then the chains are added in order. Again the same bits on every path and thread.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._jit import inlined_kernel, kernel


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's ``fma``): the same bits in every build."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


@intrinsic
def _stack_tile(typingctx, dtype):
    """A TILE_ROWS x TILE_COLS scratch array on the stack of the calling function (at
    least ROW_TILE_COLS long).

    Its elements are only ever indexed by constants once the tile's loops are unrolled, so
    LLVM keeps them in vector registers: that is what makes the tile a register tile.
    """
    return _on_the_stack(dtype, TILE_ROWS * TILE_COLS)


@intrinsic
def _stack_vector(typingctx, dtype):
    """A NARROW_COLS scratch vector on the stack of the calling function.

    One allocation per accumulator: LLVM keeps 16 of them in registers where it leaves
    the rows of one 16 x 16 ``_stack_tile`` in memory (cnn-keras's 1600 -> 10 at batch
    128: 50 us against 180)."""
    return _on_the_stack(dtype, NARROW_COLS)


def _on_the_stack(dtype, size):
    # (signature, codegen) of an intrinsic allocating size elements of dtype
    if not isinstance(dtype, (types.DType, types.NumberClass)):
        return None
    element = dtype.dtype

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(element),
                                   size=ir.Constant(ir.IntType(64), size))

    return types.CPointer(element)(dtype), codegen


# A register tile: 8 rows x 32 columns of C, 16 AVX-512 registers in float32 (32 AVX2 ones
# spill a little). Every element of B loaded serves 8 fused multiply-adds and every element
# of A 32 of them; C is only stored once, at the end of the k loop.
TILE_ROWS, TILE_COLS = 8, 32
# Four rows left over go through the top half of a tile: one image's 25 tiles of
# cnn-keras's second layer, shared 12 + 13 between two threads (8 + 4 rows, 8 + 4 + 1),
# took 25.3 us of the one-image kernel against 26.9 as 16 + 9 rows in whole tiles (side
# by side in one process).
HALF_TILE_ROWS = TILE_ROWS // 2

# Below this many steps of k a tile's zeroing and stores cost more than its loop saves
# (one thread, 32 x K @ K x 484: 89 GFLOP/s tiled against 95 at K = 10, 98 against 142 at
# K = 16; 159 against 124 at mlp-seed's 392 x 32 @ 32 x 128 of a training step's dW).
TILE_MIN_K = 32


@kernel
def matmul(C, A, B):
    # A (M, K), B (K, N) -> C (M, N) = A @ B
    M, K = A.shape
    N = B.shape[1]
    if N <= NARROW_COLS:
        _matmul_narrow(C, A, B)
        return
    if K < TILE_MIN_K:
        _matmul_rows(C, A, B, 0)
        return
    full_rows = M - M % TILE_ROWS
    half = M - full_rows >= HALF_TILE_ROWS  # and a half tile below the whole ones
    # Column panels outside, row blocks inside: a K x 32 panel of B stays in the L1 cache
    # while every block of rows passes over it (conv2's forward product: 227 against 195
    # GFLOP/s the other way round).
    for panel in range(N // TILE_COLS):
        j = panel * TILE_COLS
        _tiles_of_panel(C, A, B, full_rows, half, j, j, K, TILE_COLS)
    tail = N % TILE_COLS
    if tail > 0 and (full_rows > 0 or half):
        # The last columns go through the same tile, from a copy of B's last columns padded
        # with zeros: a tile's C[i, j] is accumulated in the same order whatever its width.
        padded = np.zeros((K, TILE_COLS), B.dtype)
        padded[:, :tail] = B[:, N - tail:]
        _tiles_of_panel(C, A, padded, full_rows, half, N - tail, 0, K, tail)
    tiled_rows = full_rows + HALF_TILE_ROWS * half
    if N % ROW_TILE_COLS == 0:
        _row_tiles(C, A, B, tiled_rows, K, ROW_TILE_COLS)
    elif N % HALF_ROW_TILE_COLS == 0:
        _row_tiles(C, A, B, tiled_rows, K, HALF_ROW_TILE_COLS)
    else:
        _matmul_rows(C, A, B, tiled_rows)


@inlined_kernel
def _tiles_of_panel(C, A, B, full_rows, half, j_C, j_B, K, width):
    # C[:, j_C:j_C+width] of the tiled rows: whole tiles down to full_rows, then a half one
    for block in range(full_rows // TILE_ROWS):
        _tile(C, A, B, block * TILE_ROWS, j_C, j_B, K, width, TILE_ROWS)
    if half:
        _tile(C, A, B, full_rows, j_C, j_B, K, width, HALF_TILE_ROWS)


# The rows left over by the tiles (all of them when predicting one image), where N allows,
# go 128 columns at a time through a one-row tile: 8 AVX-512 accumulators, enough to hide
# the fma latency. One row of mlp-seed's first layer: 3.1 us against 3.9 for the row
# updates, which load and store C for every 8 steps of k. Where N is a multiple of 64
# only, 64 at a time: the 13th row of one image's conv2 tiles on the second thread, 16
# products of 1 x 32 @ 32 x 64, took 1.4 us as row updates.
# The tile skips the steps whose factor of A is 0: most of an MNIST image's pixels, and
# many of a ReLU's outputs. fma(0, b, s) is s for a finite b (but for the sign of a zero
# s), so a row keeps its bits wherever B is finite.
ROW_TILE_COLS = 128
HALF_ROW_TILE_COLS = ROW_TILE_COLS // 2


@inlined_kernel
def _row_tiles(C, A, B, first, K, width):
    # C[first:] = A[first:] @ B through one-row tiles width (a constant) columns wide
    for r in range(first, A.shape[0]):
        for panel in range(B.shape[1] // width):
            _row_tile(C, A, B, r, panel * width, K, width)


@inlined_kernel
def _row_tile(C, A, B, i, j, K, width):
    # C[i, j:j+width] = A[i] @ B[:, j:j+width]
    acc = carray(_stack_tile(A.dtype), (ROW_TILE_COLS,))
    for c in range(width):
        acc[c] = 0
    for k in range(K):
        a, Bk = A[i, k], B[k]
        if a == 0:
            continue
        for c in range(width):
            acc[c] = fma(a, Bk[j + c], acc[c])
    for c in range(width):
        C[i, j + c] = acc[c]


@inlined_kernel
def _tile(C, A, B, i, j_C, j_B, K, width, rows):
    # C[i:i+rows, j_C:j_C+width] = A[i:i+rows] @ B[:, j_B:j_B+width], through rows x 32
    # accumulators; rows is TILE_ROWS or HALF_TILE_ROWS, a constant once inlined
    acc = carray(_stack_tile(A.dtype), (TILE_ROWS, TILE_COLS))
    acc[:] = 0
    c0, c1, c2, c3 = acc[0], acc[1], acc[2], acc[3]
    c4, c5, c6, c7 = acc[4], acc[5], acc[6], acc[7]
    lower = i + rows - HALF_TILE_ROWS  # a half tile reads its own rows again, unused
    for k in range(K):
        Bk = B[k]
        a0, a1, a2, a3 = A[i, k], A[i + 1, k], A[i + 2, k], A[i + 3, k]
        a4, a5, a6, a7 = A[lower, k], A[lower + 1, k], A[lower + 2, k], A[lower + 3, k]
        for c in range(TILE_COLS):
            b = Bk[j_B + c]
            c0[c] = fma(a0, b, c0[c])
            c1[c] = fma(a1, b, c1[c])
            c2[c] = fma(a2, b, c2[c])
            c3[c] = fma(a3, b, c3[c])
            if rows == TILE_ROWS:
                c4[c] = fma(a4, b, c4[c])
                c5[c] = fma(a5, b, c5[c])
                c6[c] = fma(a6, b, c6[c])
                c7[c] = fma(a7, b, c7[c])
    for r in range(rows):
        if width == TILE_COLS:  # a constant width stores whole vectors
            for c in range(TILE_COLS):
                C[i + r, j_C + c] = acc[r, c]
        else:
            for c in range(width):
                C[i + r, j_C + c] = acc[r, c]


@kernel
def _matmul_rows(C, A, B, first):
    # C[first:] = A[first:] @ B, whole rows of C at a time: for short k, and the rows left
    # over by the tiles
    M, K = A.shape
    C[first:] = 0
    i = first
    while i + 8 <= M:
        k = 0
        while k + 4 <= K:
            _update_8x4(C, A, B, i, k)
            k += 4
        for r in range(i, i + 8):
            _update_row(C[r], A[r], B, k, K)
        i += 8
    for r in range(i, M):
        _update_row(C[r], A[r], B, 0, K)


# The loops below run j from 0: with a start only known at run time, Numba guards every
# index against being negative and LLVM no longer vectorises them (measured 9x slower);
# column blocks taken as slices lose the contiguous layout instead (2x slower).


@inlined_kernel
def _update_row(c, a, B, start, stop):
    # c (N,) += a[start:stop] @ B[start:stop], eight steps of k per pass over c (a single
    # row streams B from the L2 cache: 3.6 us for 784 x 128 against 4.5 one step a pass)
    k = start
    while k + 8 <= stop:
        a0, a1, a2, a3 = a[k], a[k + 1], a[k + 2], a[k + 3]
        a4, a5, a6, a7 = a[k + 4], a[k + 5], a[k + 6], a[k + 7]
        B0, B1, B2, B3 = B[k], B[k + 1], B[k + 2], B[k + 3]
        B4, B5, B6, B7 = B[k + 4], B[k + 5], B[k + 6], B[k + 7]
        for j in range(c.size):
            low = fma(a3, B3[j], fma(a2, B2[j], fma(a1, B1[j], fma(a0, B0[j], c[j]))))
            c[j] = fma(a7, B7[j], fma(a6, B6[j], fma(a5, B5[j], fma(a4, B4[j], low))))
        k += 8
    for rest in range(k, stop):
        ak, Bk = a[rest], B[rest]
        for j in range(c.size):
            c[j] = fma(ak, Bk[j], c[j])


@inlined_kernel
def _update_8x4(C, A, B, i, k):
    # C[i:i+8] += A[i:i+8, k:k+4] @ B[k:k+4]. The 32 factors of A are read into locals
    # before the loop: LLVM cannot tell that storing into C leaves A unchanged, and would
    # otherwise read them again for every j.
    a00, a01, a02, a03 = A[i, k], A[i, k + 1], A[i, k + 2], A[i, k + 3]
    a10, a11, a12, a13 = A[i + 1, k], A[i + 1, k + 1], A[i + 1, k + 2], A[i + 1, k + 3]
    a20, a21, a22, a23 = A[i + 2, k], A[i + 2, k + 1], A[i + 2, k + 2], A[i + 2, k + 3]
    a30, a31, a32, a33 = A[i + 3, k], A[i + 3, k + 1], A[i + 3, k + 2], A[i + 3, k + 3]
    a40, a41, a42, a43 = A[i + 4, k], A[i + 4, k + 1], A[i + 4, k + 2], A[i + 4, k + 3]
    a50, a51, a52, a53 = A[i + 5, k], A[i + 5, k + 1], A[i + 5, k + 2], A[i + 5, k + 3]
    a60, a61, a62, a63 = A[i + 6, k], A[i + 6, k + 1], A[i + 6, k + 2], A[i + 6, k + 3]
    a70, a71, a72, a73 = A[i + 7, k], A[i + 7, k + 1], A[i + 7, k + 2], A[i + 7, k + 3]
    B0, B1, B2, B3 = B[k], B[k + 1], B[k + 2], B[k + 3]
    C0, C1, C2, C3, C4, C5, C6, C7 = (C[i], C[i + 1], C[i + 2], C[i + 3], C[i + 4], C[i + 5],
                                      C[i + 6], C[i + 7])
    for j in range(C0.size):
        b0, b1, b2, b3 = B0[j], B1[j], B2[j], B3[j]
        C0[j] = fma(a03, b3, fma(a02, b2, fma(a01, b1, fma(a00, b0, C0[j]))))
        C1[j] = fma(a13, b3, fma(a12, b2, fma(a11, b1, fma(a10, b0, C1[j]))))
        C2[j] = fma(a23, b3, fma(a22, b2, fma(a21, b1, fma(a20, b0, C2[j]))))
        C3[j] = fma(a33, b3, fma(a32, b2, fma(a31, b1, fma(a30, b0, C3[j]))))
        C4[j] = fma(a43, b3, fma(a42, b2, fma(a41, b1, fma(a40, b0, C4[j]))))
        C5[j] = fma(a53, b3, fma(a52, b2, fma(a51, b1, fma(a50, b0, C5[j]))))
        C6[j] = fma(a63, b3, fma(a62, b2, fma(a61, b1, fma(a60, b0, C6[j]))))
        C7[j] = fma(a73, b3, fma(a72, b2, fma(a71, b1, fma(a70, b0, C7[j]))))


# Narrow products, N <= 16: C[i] is one vector of accumulators, and one chain of fmas over
# k per C[i, j] waits 4 cycles on each step. Instead each C[i, j] is summed in CHAINS
# chains, chain q taking the steps k = q, q + CHAINS, ... in order, and C[i, j] is
# ((chain 0 + chain 1) + chain 2) + chain 3: the same bits in a tile of rows or alone.
# cnn-keras's 1600 -> 10, one thread: one image 1.1 us against 2.8 as a single chain, a
# batch of 128 50 us against 59 as the padded 8 x 32 tiles.
NARROW_COLS, CHAINS, NARROW_ROWS = 16, 4, 4


@kernel
def _matmul_narrow(C, A, B):
    # A (M, K), B (K, N <= 16) -> C (M, N) = A @ B, in CHAINS chains per element
    M, K = A.shape
    N = B.shape[1]
    tiled = M - M % NARROW_ROWS
    if tiled > 0:  # 4 rows at a time, reading B padded to 16 columns with zeros
        padded = np.zeros((K, NARROW_COLS), B.dtype)
        padded[:, :N] = B
        for i in range(0, tiled, NARROW_ROWS):
            _narrow_tile(C, A, padded, i)
    if tiled < M:  # a row at a time, reading 16 values of B from each step's row on
        # (no padded copy: a few rows cost less than copying B). The last steps, whose 16
        # values would run past B's end, read a padded copy of their rows.
        flat = B.ravel()
        loaded = min(K, (K * N - NARROW_COLS) // N + 1) if K * N >= NARROW_COLS else 0
        loaded -= loaded % CHAINS
        last = np.zeros((K - loaded, NARROW_COLS), B.dtype)
        last[:, :N] = B[loaded:]
        for i in range(tiled, M):
            _narrow_row(C, A, flat, i, loaded, last)


@inlined_kernel
def _narrow_tile(C, A, padded, i):
    # C[i:i+4] = A[i:i+4] @ B, B padded to 16 columns (K, 16)
    K, dtype = A.shape[1], A.dtype
    # s[4 r + q]: row i + r's chain q
    s0, s1, s2, s3 = _zeros(dtype), _zeros(dtype), _zeros(dtype), _zeros(dtype)
    s4, s5, s6, s7 = _zeros(dtype), _zeros(dtype), _zeros(dtype), _zeros(dtype)
    s8, s9, s10, s11 = _zeros(dtype), _zeros(dtype), _zeros(dtype), _zeros(dtype)
    s12, s13, s14, s15 = _zeros(dtype), _zeros(dtype), _zeros(dtype), _zeros(dtype)
    A0, A1, A2, A3 = A[i], A[i + 1], A[i + 2], A[i + 3]
    whole = K - K % CHAINS
    for k in range(0, whole, CHAINS):  # one step of each chain: 16 fmas in one loop
        b0, b1, b2, b3 = padded[k], padded[k + 1], padded[k + 2], padded[k + 3]
        a0, a1, a2, a3 = A0[k], A0[k + 1], A0[k + 2], A0[k + 3]
        a4, a5, a6, a7 = A1[k], A1[k + 1], A1[k + 2], A1[k + 3]
        a8, a9, a10, a11 = A2[k], A2[k + 1], A2[k + 2], A2[k + 3]
        a12, a13, a14, a15 = A3[k], A3[k + 1], A3[k + 2], A3[k + 3]
        for c in range(NARROW_COLS):
            s0[c] = fma(a0, b0[c], s0[c])
            s1[c] = fma(a1, b1[c], s1[c])
            s2[c] = fma(a2, b2[c], s2[c])
            s3[c] = fma(a3, b3[c], s3[c])
            s4[c] = fma(a4, b0[c], s4[c])
            s5[c] = fma(a5, b1[c], s5[c])
            s6[c] = fma(a6, b2[c], s6[c])
            s7[c] = fma(a7, b3[c], s7[c])
            s8[c] = fma(a8, b0[c], s8[c])
            s9[c] = fma(a9, b1[c], s9[c])
            s10[c] = fma(a10, b2[c], s10[c])
            s11[c] = fma(a11, b3[c], s11[c])
            s12[c] = fma(a12, b0[c], s12[c])
            s13[c] = fma(a13, b1[c], s13[c])
            s14[c] = fma(a14, b2[c], s14[c])
            s15[c] = fma(a15, b3[c], s15[c])
    # The K % 4 last steps, chain by chain (each chain's accumulators indexed by constants)
    if whole < K:
        b = padded[whole]
        _fmas(s0, s4, s8, s12, A0[whole], A1[whole], A2[whole], A3[whole], b, b, b, b)
    if whole + 1 < K:
        k, b = whole + 1, padded[whole + 1]
        _fmas(s1, s5, s9, s13, A0[k], A1[k], A2[k], A3[k], b, b, b, b)
    if whole + 2 < K:
        k, b = whole + 2, padded[whole + 2]
        _fmas(s2, s6, s10, s14, A0[k], A1[k], A2[k], A3[k], b, b, b, b)
    _chains_total(C, i, s0, s1, s2, s3)
    _chains_total(C, i + 1, s4, s5, s6, s7)
    _chains_total(C, i + 2, s8, s9, s10, s11)
    _chains_total(C, i + 3, s12, s13, s14, s15)


@inlined_kernel
def _narrow_row(C, A, flat, i, loaded, last):
    # C[i] = A[i] @ B, B's values flat; last: B's rows from loaded on, padded to 16 columns
    K, N, dtype = A.shape[1], C.shape[1], A.dtype
    s0, s1, s2, s3 = _zeros(dtype), _zeros(dtype), _zeros(dtype), _zeros(dtype)
    a = A[i]
    for k in range(0, loaded, CHAINS):
        _fmas(s0, s1, s2, s3, a[k], a[k + 1], a[k + 2], a[k + 3],
              flat[k * N:k * N + NARROW_COLS], flat[(k + 1) * N:(k + 1) * N + NARROW_COLS],
              flat[(k + 2) * N:(k + 2) * N + NARROW_COLS],
              flat[(k + 3) * N:(k + 3) * N + NARROW_COLS])
    whole = K - K % CHAINS
    for k in range(loaded, whole, CHAINS):
        j = k - loaded
        _fmas(s0, s1, s2, s3, a[k], a[k + 1], a[k + 2], a[k + 3],
              last[j], last[j + 1], last[j + 2], last[j + 3])
    if whole < K:
        _step(s0, a[whole], last[whole - loaded])
    if whole + 1 < K:
        _step(s1, a[whole + 1], last[whole + 1 - loaded])
    if whole + 2 < K:
        _step(s2, a[whole + 2], last[whole + 2 - loaded])
    _chains_total(C, i, s0, s1, s2, s3)


@inlined_kernel
def _zeros(dtype):
    vector = carray(_stack_vector(dtype), (NARROW_COLS,))
    for c in range(NARROW_COLS):
        vector[c] = 0
    return vector


@inlined_kernel
def _fmas(s0, s1, s2, s3, a0, a1, a2, a3, b0, b1, b2, b3):
    # s_q += a_q * b_q: one step of a row's 4 chains, or of one chain of 4 rows
    for c in range(NARROW_COLS):
        s0[c] = fma(a0, b0[c], s0[c])
        s1[c] = fma(a1, b1[c], s1[c])
        s2[c] = fma(a2, b2[c], s2[c])
        s3[c] = fma(a3, b3[c], s3[c])


@inlined_kernel
def _step(s, a, b):
    for c in range(NARROW_COLS):
        s[c] = fma(a, b[c], s[c])


@inlined_kernel
def _chains_total(C, i, s0, s1, s2, s3):
    for c in range(C.shape[1]):
        C[i, c] = ((s0[c] + s1[c]) + s2[c]) + s3[c]


# C = A @ B.T for factors laid out along k, as a convolution's dy (F x pixels) and columns
# ((CKK + 1) x pixels) are for its (dW | db): no transposed copy of either, as matmul would
# need, nor the padding of a narrow C (conv1's 10 columns) to a whole tile. Each C[m, n] is
# a dot product over k in LANES partial sums, lane l taking k = l, l + LANES, ... in order
# (the last K % LANES steps in lanes 0, 1, ...), then the lanes added in order: the same
# bits in a tile or alone. A tile holds NT_ROWS x NT_COLS dot products in vector registers.
NT_ROWS, NT_COLS, LANES = 8, 2, 16


@kernel
def matmul_nt(C, A, B):
    # A (M, K), B (N, K) -> C (M, N) = A @ B.T
    M, N = C.shape
    M_tiled, N_tiled = M - M % NT_ROWS, N - N % NT_COLS
    for m in range(0, M_tiled, NT_ROWS):
        for n in range(0, N_tiled, NT_COLS):
            _nt_tile(C, A, B, m, n)
    for m in range(M):
        for n in range(N_tiled if m < M_tiled else 0, N):
            C[m, n] = _dot(A[m], B[n])


@inlined_kernel
def _nt_tile(C, A, B, m, n):
    # C[m:m+8, n:n+2] = A[m:m+8] @ B[n:n+2].T
    acc = carray(_stack_tile(A.dtype), (NT_ROWS * NT_COLS, LANES))
    acc[:] = 0
    a0, a1, a2, a3 = A[m], A[m + 1], A[m + 2], A[m + 3]
    a4, a5, a6, a7 = A[m + 4], A[m + 5], A[m + 6], A[m + 7]
    b0, b1 = B[n], B[n + 1]
    K = A.shape[1]
    full = K - K % LANES
    for k0 in range(0, full, LANES):
        _nt_step(acc, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, k0, LANES)
    _nt_step(acc, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, full, K - full)
    for p in range(NT_ROWS * NT_COLS):
        C[m + p // NT_COLS, n + p % NT_COLS] = _lanes_total(acc[p])


@inlined_kernel
def _nt_step(acc, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, k0, width):
    # lanes [0, width) of the 16 dot products += the factors at k0 + lane
    for lane in range(width):
        k = k0 + lane
        x, y = b0[k], b1[k]
        acc[0, lane], acc[1, lane] = fma(a0[k], x, acc[0, lane]), fma(a0[k], y, acc[1, lane])
        acc[2, lane], acc[3, lane] = fma(a1[k], x, acc[2, lane]), fma(a1[k], y, acc[3, lane])
        acc[4, lane], acc[5, lane] = fma(a2[k], x, acc[4, lane]), fma(a2[k], y, acc[5, lane])
        acc[6, lane], acc[7, lane] = fma(a3[k], x, acc[6, lane]), fma(a3[k], y, acc[7, lane])
        acc[8, lane], acc[9, lane] = fma(a4[k], x, acc[8, lane]), fma(a4[k], y, acc[9, lane])
        acc[10, lane], acc[11, lane] = fma(a5[k], x, acc[10, lane]), fma(a5[k], y, acc[11, lane])
        acc[12, lane], acc[13, lane] = fma(a6[k], x, acc[12, lane]), fma(a6[k], y, acc[13, lane])
        acc[14, lane], acc[15, lane] = fma(a7[k], x, acc[14, lane]), fma(a7[k], y, acc[15, lane])


@inlined_kernel
def _dot(a, b):
    # a (K,) . b (K,), summed as a tile sums each of its dot products
    acc = carray(_stack_tile(a.dtype), (LANES,))
    for lane in range(LANES):
        acc[lane] = 0
    full = a.size - a.size % LANES
    for k0 in range(0, full, LANES):
        for lane in range(LANES):
            acc[lane] = fma(a[k0 + lane], b[k0 + lane], acc[lane])
    for k in range(full, a.size):
        acc[k - full] = fma(a[k], b[k], acc[k - full])
    return _lanes_total(acc)


@inlined_kernel
def _lanes_total(lanes):
    total = lanes[0]
    for lane in range(1, LANES):
        total += lanes[lane]
    return total


def _warmup(dtype) -> None:
    A, B = np.ones((9, 5), dtype), np.ones((5, 3), dtype)
    matmul(np.empty((9, 3), dtype), A, B)
    matmul_nt(np.empty((9, 3), dtype), A, B.T.copy())
