"""gemm.matmul against NumPy: every remainder of its 8 x 4 unrolling, NaN, fused rounding."""

import numpy as np
import pytest

from fastmnist._kernels._jit import kernel
from fastmnist._kernels.gemm import fma, matmul

# M around multiples of 8 and K around multiples of 4 reach every remainder loop; N = 1
# and 17 give the vector loops a tail only.
SHAPES = [(1, 1, 1), (7, 3, 5), (8, 4, 16), (9, 5, 17), (16, 8, 1), (17, 13, 33),
          (64, 289, 121)]


@pytest.mark.parametrize("M, K, N", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy(M, K, N, dtype):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    A, B = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    C = np.full((M, N), np.nan, dtype)  # matmul must overwrite, not add to, C
    matmul(C, A.astype(dtype), B.astype(dtype))
    tol = 1e-12 if dtype == np.float64 else 2e-6 * np.sqrt(K)
    np.testing.assert_allclose(C, A.astype(dtype).astype(np.float64) @ B.astype(dtype),
                               rtol=tol, atol=tol)


def test_matmul_propagates_nan_to_its_row_and_column_only():
    A, B = np.ones((9, 6), np.float32), np.ones((6, 5), np.float32)
    A[8, 5], B[0, 2] = np.nan, np.nan  # row 8 through the tail loop; column 2 through B
    C = np.empty((9, 5), np.float32)
    matmul(C, A, B)
    assert np.isnan(C[8]).all() and np.isnan(C[:, 2]).all()
    assert np.count_nonzero(np.isnan(C)) == 5 + 9 - 1
    assert np.all(C[:8][:, [0, 1, 3, 4]] == 6)


@kernel
def _fma(a, b, c):
    return fma(a, b, c)


def test_fma_rounds_once():
    # (1 + 2^-12)^2 - (1 + 2^-11) = 2^-24 exactly; a multiply rounded to float32 before the
    # add loses it (1 + 2^-11 + 2^-24 is not a float32), a fused multiply-add keeps it.
    a = np.float32(1 + 2.0 ** -12)
    c = np.float32(-(1 + 2.0 ** -11))
    assert _fma(a, a, c) == np.float32(2.0 ** -24)
    assert np.float32(a * a) + c == 0
