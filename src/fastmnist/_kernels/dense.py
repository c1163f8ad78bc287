"""Dense (fully connected) layer: y = x W + b, and its gradients.

The forward product runs in gemm.matmul, in blocks of rows, one thread task each: every
y[i, j] is the same chain of fused multiply-adds whichever block (or tile) computes it, so
the result does not depend on the thread count, and predicting needs no BLAS setting (for
a single image, ``_config.threads`` alone would cost more than the whole layer).

The backward products go to BLAS through ``np.dot`` inside the kernel (sgemm for float32),
which ``_config.threads`` keeps on one thread so that results do not depend on the thread
count; the bias gradient is a prange loop over column blocks. BLAS against a prange loop
nest (each thread owning rows of the output), forward and backward, 2 threads: 784->128
at batch 32 227 us against 745 us, at batch 128 0.69 ms against 2.91 ms
(docs/benchmarks/kernels.md, before matmul's register tiles).
"""

import numpy as np
from numba import prange

from ._jit import parallel_kernel
from .gemm import matmul

# Columns per thread task in the bias gradient: a block of 16 float32 is one cache line.
_COLUMN_BLOCK = 16
# Rows per thread task in the forward pass: a batch of 128 keeps 2 threads busy.
_ROW_BLOCK = 64


@parallel_kernel
def dense_forward(y, x, W, b):
    # x (B, K), W (K, N), b (N,) -> y (B, N)
    for block in prange(-(-y.shape[0] // _ROW_BLOCK)):
        rows = slice(block * _ROW_BLOCK, min((block + 1) * _ROW_BLOCK, y.shape[0]))
        matmul(y[rows], x[rows], W)
        for i in range(rows.start, rows.stop):
            for j in range(y.shape[1]):
                y[i, j] += b[j]


@parallel_kernel
def dense_backward(dx, dW, db, dy, x, W, need_dx):
    # dy (B, N), x (B, K), W (K, N) -> dx (B, K), dW (K, N), db (N,)
    # dx is left untouched when need_dx is False: the first layer has no use for it.
    np.dot(x.T, dy, dW)
    # db = dy.sum(axis=0): each thread owns a block of columns and sums it over the rows in
    # row order, so the result is the same for any thread count (a prange reduction is not).
    n_blocks = (dy.shape[1] + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    for block in prange(n_blocks):
        start = block * _COLUMN_BLOCK
        stop = min(start + _COLUMN_BLOCK, dy.shape[1])
        for j in range(start, stop):
            db[j] = 0
        for i in range(dy.shape[0]):
            for j in range(start, stop):
                db[j] += dy[i, j]
    if need_dx:
        np.dot(dy, W.T, dx)


def _warmup(dtype):
    x, W, b = np.ones((2, 3), dtype), np.ones((3, 4), dtype), np.ones(4, dtype)
    y = np.empty((2, 4), dtype)
    dense_forward(y, x, W, b)
    dense_backward(np.empty_like(x), np.empty_like(W), np.empty_like(b), y, x, W, True)
