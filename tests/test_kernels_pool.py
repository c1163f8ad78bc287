"""Pooling kernels against tests/naive.py: awkward shapes, gradients, threads, NaN."""

import naive as naive
import numpy as np
import pytest
from naive import numerical_gradient

from fastmnist._config import threads
from fastmnist._kernels import activation as act
from fastmnist._kernels import pool

# (B, C, H, W, pool, stride): prime sizes, 1x1 outputs, overlapping windows (stride 1),
# windows that leave rows and columns unread (7x5 with stride 2; gaps between windows with
# stride 3 > pool 2), pool 1.
CASES = [
    (1, 1, 2, 2, 2, 2),
    (2, 2, 8, 7, 2, 3),
    (2, 3, 7, 5, 2, 2),
    (2, 3, 7, 5, 3, 1),
    (1, 3, 7, 5, 3, 3),
    (3, 1, 5, 7, 2, 1),
    (2, 2, 6, 6, 3, 2),
    (1, 1, 3, 3, 3, 3),
    (2, 1, 1, 1, 1, 1),
]
DTYPES = [np.float64, np.float32]


def distinct(shape, dtype, seed=0):
    """Values at least 1e-3 apart, so that finite differences never change a window's max."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(np.prod(shape)) * 1e-3 - 1.0).reshape(shape).astype(dtype)


def max_forward(x, size, stride, kernel=pool.maxpool2d_forward):
    B, C, H, W = x.shape
    y = np.full((B, C, (H - size) // stride + 1, (W - size) // stride + 1), 7.0, x.dtype)
    kernel(y, x, size, stride)
    return y


def max_backward(x, y, dy, size, stride, kernel=pool.maxpool2d_backward, relu_gate=False):
    dx = np.full_like(x, np.nan)  # every element must be written: a gradient or 0
    kernel(dx, dy, x, y, size, stride, relu_gate)
    return dx


def avg_forward(x, kernel=pool.global_avgpool_forward):
    y = np.full(x.shape[:2], np.nan, x.dtype)
    kernel(y, x)
    return y


def avg_backward(x, dy, kernel=pool.global_avgpool_backward):
    dx = np.full_like(x, np.nan)
    kernel(dx, dy)
    return dx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_maxpool_matches_reference(case, dtype):
    B, C, H, W, size, stride = case
    rng = np.random.default_rng(1)
    # Few distinct values: many ties, which go to the first maximum of the window.
    x = rng.integers(0, 3, (B, C, H, W)).astype(dtype)
    y = max_forward(x, size, stride)
    want_y, want_argmax = naive.maxpool2d_forward(x, size, stride)
    np.testing.assert_array_equal(y, want_y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(max_backward(x, y, dy, size, stride),
                               naive.maxpool2d_backward(x.shape, want_argmax, dy),
                               rtol=1e-12 if dtype == np.float64 else 1e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("twin", ["parallel", "serial"])
def test_maxpool_keeps_nan_and_the_first_zeros_sign(case, dtype, twin):
    B, C, H, W, size, stride = case
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, (B, C, H, W)).astype(dtype) - 1.0  # ties, and -0 vs 0 below
    x[x == 0] = rng.choice([0.0, -0.0], int((x == 0).sum()))
    x.flat[rng.choice(x.size, max(1, x.size // 9), replace=False)] = np.nan
    want_y, want_argmax = naive.maxpool2d_forward(x, size, stride)
    y = max_forward(x, size, stride, getattr(pool.maxpool2d_forward, twin))
    np.testing.assert_array_equal(y, want_y)  # NaN where it is, the same zero's sign
    np.testing.assert_array_equal(np.signbit(y), np.signbit(want_y))
    # The backward pass finds the same element again: the first NaN, the first of the zeros.
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = max_backward(x, y, dy, size, stride, getattr(pool.maxpool2d_backward, twin))
    np.testing.assert_array_equal(dx, naive.maxpool2d_backward(x.shape, want_argmax, dy))


def test_maxpool_ties_go_to_the_first_maximum_by_hand():
    x = np.array([[[[1.0, 5.0, 5.0], [5.0, 2.0, 5.0], [0.0, 5.0, 1.0]]]])
    y = max_forward(x, 2, 1)
    np.testing.assert_array_equal(y, [[[[5.0, 5.0], [5.0, 5.0]]]])
    # Windows at (0,0), (0,1), (1,0), (1,1): their first 5 in row-major order, that is
    # the flat indices 1, 1, 3, 5.
    dx = max_backward(x, y, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 2, 1)
    np.testing.assert_array_equal(dx, [[[[0, 3, 0], [3, 0, 4], [0, 0, 0]]]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_global_avgpool_matches_reference(case, dtype):
    x = distinct(case[:4], dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(avg_forward(x), naive.global_avgpool_forward(x), **tol)
    dy = np.random.default_rng(2).standard_normal(case[:2]).astype(dtype)
    np.testing.assert_allclose(avg_backward(x, dy), naive.global_avgpool_backward(x.shape, dy),
                               **tol)


@pytest.mark.parametrize("case", CASES)
def test_pool_gradients_by_finite_differences(case):
    size, stride = case[4:]
    x = distinct(case[:4], np.float64, seed=3)
    rng = np.random.default_rng(4)
    y = max_forward(x, size, stride)
    R = rng.standard_normal(y.shape)  # loss = sum(y * R)
    # The losses call the serial twins: hundreds of calls, no thread wake-ups.

    def max_loss():
        return (max_forward(x, size, stride, pool.maxpool2d_forward.serial) * R).sum()

    np.testing.assert_allclose(max_backward(x, y, R, size, stride),
                               numerical_gradient(max_loss, x), rtol=1e-7, atol=1e-9)
    R_avg = rng.standard_normal(case[:2])

    def avg_loss():
        return (avg_forward(x, pool.global_avgpool_forward.serial) * R_avg).sum()

    np.testing.assert_allclose(avg_backward(x, R_avg), numerical_gradient(avg_loss, x),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_pool_backward_through_relu_equals_the_two_passes(case, dtype):
    # A ReLU's output (zeros, positives, a NaN) pooled; dy with -0.0, NaN and inf in it.
    B, C, H, W, size, stride = case
    rng = np.random.default_rng(7)
    x = np.maximum(rng.integers(-4, 2, (B, C, H, W)), 0).astype(dtype)
    x[0, 0, :size, :size] = 0  # a window whose maximum is 0
    x.flat[-1] = np.nan
    y = max_forward(x, size, stride)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy.flat[rng.permutation(dy.size)[:3]] = [-0.0, np.nan, np.inf][:dy.size]
    two_passes = max_backward(x, y, dy, size, stride)
    flat = two_passes.reshape(B, -1)
    act.activation_backward(flat, flat, x.reshape(B, -1), act.RELU)
    for kernel in (pool.maxpool2d_backward.parallel, pool.maxpool2d_backward.serial):
        fused = max_backward(x, y, dy, size, stride, kernel, relu_gate=True)
        np.testing.assert_array_equal(fused, two_passes)
        np.testing.assert_array_equal(np.signbit(fused), np.signbit(two_passes))
    if y.size > 2:  # both branches were taken
        assert (y == 0).any() and np.count_nonzero(two_passes) > 0


@pytest.mark.parametrize("relu_gate", [False, True])
@pytest.mark.parametrize("case", [c for c in CASES if c[5] >= c[4]])
def test_maxpool_backward_in_place_over_x(case, relu_gate):
    # Windows that do not overlap (stride >= pool; 7x5 leaves rows and columns in no
    # window, stride 3 > pool 2 gaps between windows): dx may be x itself, with the same
    # bits as a separate dx.
    B, C, H, W, size, stride = case
    rng = np.random.default_rng(3)
    x = np.maximum(rng.integers(-3, 4, (B, C, H, W)), 0).astype(np.float32)  # ties and 0s
    y = max_forward(x, size, stride)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want = max_backward(x, y, dy, size, stride, relu_gate=relu_gate)
    for kernel in (pool.maxpool2d_backward.parallel, pool.maxpool2d_backward.serial):
        in_place = x.copy()
        kernel(in_place, dy, in_place, y, size, stride, relu_gate)
        np.testing.assert_array_equal(in_place, want)
    assert np.count_nonzero(want) > 0


def run_all(x, dy_max, dy_avg, size, stride, twin="__call__"):
    """Every pooling output, from the kernels or from their ``twin``."""
    kernels = [getattr(k, twin) for k in (pool.maxpool2d_forward, pool.maxpool2d_backward,
                                          pool.global_avgpool_forward,
                                          pool.global_avgpool_backward)]
    y = max_forward(x, size, stride, kernels[0])
    return [y, max_backward(x, y, dy_max, size, stride, kernels[1]), avg_forward(x, kernels[2]),
            avg_backward(x, dy_avg, kernels[3])]


@pytest.fixture
def thread_inputs():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 5, 13, 11)).astype(np.float32)
    dy_max = rng.standard_normal((9, 5, 6, 5)).astype(np.float32)  # pool 3, stride 2
    dy_avg = rng.standard_normal((9, 5)).astype(np.float32)
    return x, dy_max, dy_avg, 3, 2


def test_pool_parallel_and_serial_twins_agree_exactly(thread_inputs):
    parallel = run_all(*thread_inputs, twin="parallel")
    for got, want in zip(run_all(*thread_inputs, twin="serial"), parallel, strict=True):
        np.testing.assert_array_equal(got, want)


def test_pool_same_bits_on_1_and_2_threads(thread_inputs):
    with threads(1):
        one = run_all(*thread_inputs)
    with threads(2):
        two = run_all(*thread_inputs)
    for got, want in zip(two, one, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("position", [(0, 0), (1, 1), (2, 3)])
def test_pool_propagates_nan(position):
    x = distinct((2, 1, 4, 4), np.float64)
    x[1, 0][position] = np.nan
    y = max_forward(x, 2, 2)
    want_y, _ = naive.maxpool2d_forward(x, 2, 2)
    assert np.isnan(y).sum() == 1 and not np.isnan(y[0]).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want_y))
    dx = max_backward(x, y, np.ones_like(y), 2, 2)
    assert dx[1, 0][position] == 1.0 and np.nansum(dx[1, 0]) == 4.0
    pooled = avg_forward(x)
    assert np.isnan(pooled[1, 0]) and not np.isnan(pooled[0, 0])


def test_pool_warmup():
    for dtype in DTYPES:
        pool._warmup(np.dtype(dtype))
