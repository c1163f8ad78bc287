"""gemm.matmul against NumPy: its 8 x 32 register tiles, half tiles and padded last columns,
every remainder of the 8 x 4 row updates, narrow products' chains, NaN, fused rounding;
gemm.matmul_nt's dot products, in its tiles and alone."""

import numpy as np
import pytest

from fastmnist._kernels._jit import kernel
from fastmnist._kernels.gemm import (
    CHAINS,
    HALF_ROW_TILE_COLS,
    HALF_TILE_ROWS,
    LANES,
    NARROW_COLS,
    NARROW_ROWS,
    NT_COLS,
    NT_ROWS,
    ROW_TILE_COLS,
    TILE_COLS,
    TILE_MIN_K,
    TILE_ROWS,
    _matmul_rows,
    fma,
    matmul,
    matmul_nt,
)

# Short k (below TILE_MIN_K): M around multiples of 8 and K around multiples of 4 reach
# every remainder loop of the row updates; N = 17 and 33 give the vector loops a tail.
ROW_SHAPES = [(1, 1, 17), (7, 3, 20), (8, 4, 32), (9, 5, 17), (16, 8, 33), (17, 13, 33)]
# Long k: N around multiples of 32 gives whole tiles, a padded last tile, or only that one;
# M around multiples of 8 leaves rows to the row updates, or (M < 8) every row; with N a
# multiple of 128 (or of 64 only) those rows go through one-row tiles 128 (64) wide instead.
# Four to seven rows left over take a half tile first (M = 7, 12, 13, 4).
TILE_SHAPES = [(8, 32, 32), (9, 33, 31), (17, 40, 65), (16, 32, 17), (7, 64, 40),
               (64, 289, 121), (24, 100, 96), (1, 784, 128), (11, 32, 256), (16, 48, 128),
               (12, 32, 64), (13, 40, 256), (4, 33, 20), (13, 32, 64), (9, 35, 192)]
# Narrow (N <= 16): M around multiples of 4 gives 4-row tiles, single rows, or both; K
# around multiples of 4 leaves 0 to 3 steps to the chains' last round; K * N < 16 leaves
# every step to the padded copy of B's last rows; K = 0 leaves C zero. cnn-keras's logits.
NARROW_SHAPES = [(1, 1, 1), (7, 3, 5), (8, 4, 16), (16, 8, 1), (16, 32, 1), (4, 33, 10),
                 (5, 19, 1), (9, 6, 7), (6, 2, 3), (3, 0, 4), (1, 1600, 10), (33, 130, 10)]
SHAPES = ROW_SHAPES + TILE_SHAPES + NARROW_SHAPES


def test_the_shapes_reach_every_path():
    assert all(K < TILE_MIN_K for _, K, _ in ROW_SHAPES)
    assert all(K >= TILE_MIN_K for _, K, _ in TILE_SHAPES)
    assert all(N > NARROW_COLS for _, _, N in ROW_SHAPES + TILE_SHAPES)
    assert all(N <= NARROW_COLS for _, _, N in NARROW_SHAPES)
    assert {(M >= NARROW_ROWS, M % NARROW_ROWS > 0) for M, _, _ in NARROW_SHAPES} == {
        (True, True), (True, False), (False, True)}
    assert {K % CHAINS for _, K, _ in NARROW_SHAPES} == set(range(CHAINS))
    assert any(K * N < NARROW_COLS for _, K, N in NARROW_SHAPES)
    assert {N % TILE_COLS == 0 for _, _, N in TILE_SHAPES} == {True, False}
    assert {M % TILE_ROWS == 0 for M, _, _ in TILE_SHAPES} == {True, False}
    assert {M % TILE_ROWS >= HALF_TILE_ROWS for M, _, _ in TILE_SHAPES} == {True, False}
    assert {(M % TILE_ROWS > 0, N % ROW_TILE_COLS == 0) for M, _, N in TILE_SHAPES} == {
        (True, True), (True, False), (False, True), (False, False)}
    assert any(M % HALF_TILE_ROWS > 0 and N % ROW_TILE_COLS == HALF_ROW_TILE_COLS
               for M, _, N in TILE_SHAPES)


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


@pytest.mark.parametrize("M, K, N", TILE_SHAPES)
def test_tiles_round_like_the_row_updates(M, K, N):
    # Both accumulate each C[i, j] over k in order, one fma at a time: the same bits,
    # whichever way the rows and columns are split. A is a transposed (strided) view, as
    # in a training step's dW.
    rng = np.random.default_rng(M + K + N)
    A = rng.standard_normal((K, M)).astype(np.float32).T
    B = rng.standard_normal((K, N)).astype(np.float32)
    tiled, rows = np.empty((M, N), np.float32), np.empty((M, N), np.float32)
    matmul(tiled, A, B)
    _matmul_rows(rows, A, B, 0)
    np.testing.assert_array_equal(tiled, rows)


@pytest.mark.parametrize("N", [256, 192])
def test_one_row_tiles_skip_zero_factors_and_keep_the_bits(N):
    # Rows left to the one-row tiles (N a multiple of 128, or of 64) skip the steps of k
    # whose factor of A is 0, as most of an image's pixels are: the bits of the row updates
    # all the same.
    rng = np.random.default_rng(7)
    A = rng.random((3, 784)).astype(np.float32)
    A[A < 0.8] = 0  # about the share of an MNIST image's pixels that are 0
    A[2] = 0  # a row of zeros only
    B = rng.standard_normal((784, N)).astype(np.float32)
    tiled, rows = np.empty((3, N), np.float32), np.empty((3, N), np.float32)
    matmul(tiled, A, B)
    _matmul_rows(rows, A, B, 0)
    np.testing.assert_array_equal(tiled, rows)
    assert not np.signbit(tiled[2]).any() and not tiled[2].any()


@pytest.mark.parametrize("K", [6, 40])
def test_matmul_propagates_nan_to_its_row_and_column_only(K):
    A, B = np.ones((9, K), np.float32), np.ones((K, 35), np.float32)
    A[8, K - 1], B[0, 2], B[1, 33] = np.nan, np.nan, np.nan  # a left-over row; a whole
    C = np.empty((9, 35), np.float32)                         # tile and the padded one
    matmul(C, A, B)
    assert np.isnan(C[8]).all() and np.isnan(C[:, 2]).all() and np.isnan(C[:, 33]).all()
    assert np.count_nonzero(np.isnan(C)) == 35 + 2 * (9 - 1)
    finite = np.ones(35, bool)
    finite[[2, 33]] = False
    assert np.all(C[:8][:, finite] == K)


@kernel
def _chains_reference(C, A, B):
    # Narrow products as gemm defines them, one element at a time: chain q of C[i, j] takes
    # k = q, q + CHAINS, ... in order, one fma a step; then the chains added in order
    M, K = A.shape
    for i in range(M):
        for j in range(B.shape[1]):
            chains = np.zeros(CHAINS, C.dtype)
            for k in range(K):
                chains[k % CHAINS] = fma(A[i, k], B[k, j], chains[k % CHAINS])
            total = chains[0]
            for q in range(1, CHAINS):
                total += chains[q]
            C[i, j] = total


@pytest.mark.parametrize("M, K, N", NARROW_SHAPES)
def test_narrow_products_sum_each_element_in_chains(M, K, N):
    # The same bits in a 4-row tile, in a row alone, and element by element. A is a
    # transposed (strided) view, as in a training step's dW.
    rng = np.random.default_rng(M + K + N)
    A = rng.standard_normal((K, M)).astype(np.float32).T
    B = rng.standard_normal((K, N)).astype(np.float32)
    C, alone, reference = (np.full((M, N), np.nan, np.float32) for _ in range(3))
    matmul(C, A, B)
    for i in range(M):
        matmul(alone[i:i + 1], A[i:i + 1], B)
    _chains_reference(reference, A, B)
    np.testing.assert_array_equal(C, reference)
    np.testing.assert_array_equal(alone, reference)


def test_narrow_products_propagate_nan_to_its_row_and_column_only():
    # A row alone reads 16 values from each step's row of B on: the values past its N
    # columns (the next row's, here a NaN in column 0) stay out of its result.
    A, B = np.ones((5, 11), np.float32), np.ones((11, 3), np.float32)
    A[4, 10], B[1, 0] = np.inf, np.nan  # the row alone, at its last step; a column
    C = np.empty((5, 3), np.float32)
    matmul(C, A, B)
    assert np.isnan(C[:, 0]).all() and np.isposinf(C[4, 1:]).all()
    np.testing.assert_array_equal(C[:4, 1:], 11)


# matmul_nt: M and N around multiples of its 8 x 2 tile (pairs left to single dot
# products), K around multiples of its 16 lanes (a tail only, none, both); conv1's shape.
NT_SHAPES = [(1, 1, 1), (8, 2, 16), (9, 3, 17), (7, 5, 15), (16, 4, 48), (17, 11, 100),
             (8, 3, 33), (9, 4, 31), (32, 10, 676)]


@pytest.mark.parametrize("M, N, K", NT_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_nt_matches_numpy(M, N, K, dtype):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    A, B = rng.standard_normal((M, K)), rng.standard_normal((N, K))
    C = np.full((M, N), np.nan, dtype)
    matmul_nt(C, A.astype(dtype), B.astype(dtype))
    tol = 1e-12 if dtype == np.float64 else 2e-6 * np.sqrt(K)
    np.testing.assert_allclose(C, A.astype(dtype).astype(np.float64) @ B.astype(dtype).T,
                               rtol=tol, atol=tol)


def test_the_nt_shapes_reach_every_path():
    assert {(M % NT_ROWS == 0, N % NT_COLS == 0) for M, N, _ in NT_SHAPES} == {
        (True, True), (True, False), (False, True), (False, False)}
    assert {K % LANES == 0 for _, _, K in NT_SHAPES} == {True, False}
    assert any(K < LANES for _, _, K in NT_SHAPES) and any(K > LANES for _, _, K in NT_SHAPES)


@pytest.mark.parametrize("M, N, K", [(17, 11, 100), (32, 10, 676)])
def test_matmul_nt_tiles_give_the_bits_of_one_dot_product(M, N, K):
    # Every C[m, n] is the same sum, in its tile or alone (a 1 x 1 product goes to _dot).
    rng = np.random.default_rng(K)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((N, K)).astype(np.float32)
    C, one = np.empty((M, N), np.float32), np.empty((1, 1), np.float32)
    matmul_nt(C, A, B)
    for m in range(M):
        for n in range(N):
            matmul_nt(one, A[m:m + 1], B[n:n + 1])
            assert one[0, 0] == C[m, n], (m, n)


def test_matmul_nt_propagates_nan_to_its_row_and_column_only():
    A, B = np.ones((9, 40), np.float32), np.ones((3, 40), np.float32)
    A[8, 39], B[1, 0] = np.nan, np.nan  # a row left to single dot products; a tile column
    C = np.empty((9, 3), np.float32)
    matmul_nt(C, A, B)
    assert np.isnan(C[8]).all() and np.isnan(C[:, 1]).all()
    assert np.count_nonzero(np.isnan(C)) == 3 + 9 - 1
    np.testing.assert_array_equal(C[:8][:, [0, 2]], 40)


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
