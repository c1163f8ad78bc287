"""A matrix product in Numba, C = A @ B, for the convolution's wide products.

Why not BLAS: the OpenBLAS that NumPy ships picks its kernels from the machine's
``OPENBLAS_CORETYPE`` (AVX2 here, on a CPU with AVX-512), while Numba compiles for the host
CPU. At conv2's shapes this loop nest runs about 150 GFLOP/s on one core against OpenBLAS's
110-120 (``pytest bench/test_bench_kernels.py -k matmul``).

How it is fast without fast-math's "reassoc" (left out so that every build rounds alike):
the innermost loop runs along a row of B and C, so its iterations are independent and LLVM
vectorises it as it is. Eight rows of C and four steps of k are unrolled by hand: every
element of B loaded from memory serves eight fused multiply-adds, and every element of C
loaded and stored serves four. Each C[i, j] is still accumulated over k in order, one
``fma`` at a time: the result does not depend on how the loops are split, nor on threads.
"""

from __future__ import annotations

import numpy as np
from numba.core import types
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


@kernel
def matmul(C, A, B):
    # A (M, K), B (K, N) -> C (M, N) = A @ B
    M, K = A.shape
    C[:] = 0
    i = 0
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


def _warmup(dtype) -> None:
    A, B = np.ones((9, 5), dtype), np.ones((5, 3), dtype)
    matmul(np.empty((9, 3), dtype), A, B)
