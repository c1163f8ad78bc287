"""conv + ReLU + 2x2 max pool in one kernel each way: the values of the three kernels one
after another (the same bits, but for dW and db, which add up the pixels in pool order),
the references in tests/naive.py, finite differences."""

import naive as naive
import numpy as np
import pytest
from naive import numerical_gradient

from fastmnist._config import threads
from fastmnist._kernels import activation as act
from fastmnist._kernels import conv, conv_pool, pool

# (B, C, H, W, F, K, stride, padding): even and odd conv outputs (the last row and column
# of an odd one belong to no window), one product per image and several images per product
# (small planes), padding, stride 2, more images than groups.
CASES = [
    (1, 1, 3, 3, 1, 2, 1, "valid"),
    (2, 1, 8, 7, 5, 3, 1, "valid"),
    (3, 2, 9, 9, 4, 3, 2, "same"),
    (20, 1, 6, 6, 3, 3, 1, "same"),
    (5, 1, 28, 28, 8, 3, 1, "valid"),
    (17, 3, 7, 8, 6, 2, 1, "valid"),
]


def make(case, dtype, seed=0):
    B, C, H, W, F, K, stride, padding = case
    rng = np.random.default_rng(seed)
    H_out, W_out, pad_top, pad_left = conv.conv_output_shape(H, W, K, stride, padding)
    # Small integers: ties within windows, and windows whose maximum is 0 after the ReLU.
    x = rng.integers(-2, 3, (B, C, H, W)).astype(dtype)
    w = rng.integers(-2, 3, (F, C, K, K)).astype(dtype)
    b = rng.integers(-1, 2, F).astype(dtype)
    work = np.empty(workspace(B, C, F, K, stride, H_out, W_out), dtype)
    pooled = (B, F, H_out // 2, W_out // 2)
    return x, w, b, work, (stride, pad_top, pad_left), (H_out, W_out), pooled


def workspace(*sizes):
    """Work for the fused kernels and for the separate ones (three_kernels) alike."""
    return max(conv.conv2d_workspace_shape(*sizes),
               conv_pool.conv2d_relu_pool_workspace_shape(*sizes))


# dW and db from the fused kernels add the same terms as conv2d_backward's, in pool order:
# they agree to rounding.
RTOL = {np.float32: 1e-5, np.float64: 1e-13}


def assert_values_of_the_three_kernels(got, want, dtype):
    """y and dx to the bit (the sign of zero too), dW and db to rounding."""
    for name, g, w in zip(("y", "dx", "dw", "db"), got, want, strict=True):
        if name in ("y", "dx"):
            np.testing.assert_array_equal(g, w, err_msg=name)
            np.testing.assert_array_equal(np.signbit(g), np.signbit(w), err_msg=name)
        else:
            np.testing.assert_allclose(g, w, rtol=RTOL[dtype],
                                       atol=RTOL[dtype] * np.abs(w).max(), err_msg=name)


def fused(x, w, b, dy, work, geometry, sizes, twin="__call__", need_dx=True):
    """[y, codes, dx, dw, db] from the one-pass kernels (or their ``twin``)."""
    forward = getattr(conv_pool.conv2d_relu_pool_forward, twin)
    backward = getattr(conv_pool.conv2d_relu_pool_backward, twin)
    y = np.full(dy.shape, np.nan, x.dtype)
    codes = np.full(dy.shape, 99, x.dtype)
    forward(y, codes, work, x, w, b, *geometry, *sizes, True)
    dx, dw, db = np.full_like(x, 7.0), np.full_like(w, np.nan), np.full_like(b, np.nan)
    backward(dx, dw, db, work, x, dy, codes, w, *geometry, *sizes, need_dx)
    return [y, codes, dx, dw, db]


def three_kernels(x, w, b, dy, work, geometry, sizes):
    """[y, dx, dw, db] from conv2d (ReLU inside), maxpool2d and the pool's backward through
    the ReLU, then conv2d_backward."""
    h = np.empty((len(x), len(w), *sizes), x.dtype)
    conv.conv2d_forward(h, work, x, w, b, *geometry, act.RELU)
    y = np.empty(dy.shape, x.dtype)
    pool.maxpool2d_forward(y, h, 2, 2)
    dh = np.empty_like(h)
    pool.maxpool2d_backward(dh, dy, h, y, 2, 2, True)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    conv.conv2d_backward(dx, dw, db, work, x, dh, w, *geometry, True)
    return [y, dx, dw, db]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_one_pass_gives_the_values_of_the_three_kernels(case, dtype):
    x, w, b, work, geometry, sizes, pooled = make(case, dtype)
    dy = np.random.default_rng(1).standard_normal(pooled).astype(dtype)
    dy.flat[0] = -0.0
    want = three_kernels(x, w, b, dy, work, geometry, sizes)
    for twin in ("parallel", "serial"):
        y, codes, dx, dw, db = fused(x, w, b, dy, work, geometry, sizes, twin)
        assert_values_of_the_three_kernels((y, dx, dw, db), want, dtype)
        assert set(np.unique(codes)) <= {0, 1, 2, 3, conv_pool.NO_GRADIENT}
    if codes.size > 8:  # windows with and without a gradient were both met
        assert (codes == conv_pool.NO_GRADIENT).any() and (codes < 4).any()


@pytest.mark.parametrize("case", [CASES[3], CASES[4]])
def test_one_pass_on_buffers_made_for_more_images(case):
    # A smaller batch than the work and codes were made for (the last batch of an epoch):
    # the leading rows of the codes, and the bits of work made for this batch.
    x, w, b, exact_work, geometry, sizes, pooled = make(case, np.float32)
    B, C, _, _, F, K, stride, _ = case
    work = np.empty(workspace(2 * B + 3, C, F, K, stride, *sizes), np.float32)
    codes = np.full((2 * B + 3, *pooled[1:]), 99, np.float32)
    dy = np.random.default_rng(5).standard_normal(pooled).astype(np.float32)
    y = np.empty(pooled, np.float32)
    conv_pool.conv2d_relu_pool_forward(y, codes[:B], work, x, w, b, *geometry, *sizes, True)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    conv_pool.conv2d_relu_pool_backward(dx, dw, db, work, x, dy, codes[:B], w, *geometry,
                                        *sizes, True)
    want = fused(x, w, b, dy, exact_work, geometry, sizes)
    for got, expected in zip((y, codes[:B], dx, dw, db), want, strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(codes[B:], 99)


@pytest.mark.parametrize("case", CASES[1:4])
def test_one_pass_matches_the_reference(case):
    x, w, b, work, geometry, sizes, pooled = make(case, np.float64)
    dy = np.random.default_rng(2).standard_normal(pooled)
    y, codes, _, _, _ = fused(x, w, b, dy, work, geometry, sizes)
    h = naive.activation("relu", naive.conv2d_forward(x, w, b, *geometry, *sizes))
    want_y, _ = naive.maxpool2d_forward(h, 2, 2)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    # The codes name each window's first maximum, or say that the ReLU passes nothing.
    windows = h[:, :, :2 * pooled[2], :2 * pooled[3]].reshape(*pooled[:2], pooled[2], 2,
                                                                pooled[3], 2)
    windows = windows.transpose(0, 1, 2, 4, 3, 5).reshape(*pooled, 4)
    want_codes = np.where(want_y == 0, conv_pool.NO_GRADIENT, np.argmax(windows, axis=-1))
    np.testing.assert_array_equal(codes, want_codes)


def test_predicting_needs_no_codes():
    x, w, b, work, geometry, sizes, pooled = make(CASES[4], np.float32)
    y, codes = np.empty(pooled, np.float32), np.full(pooled, 9.0, np.float32)
    conv_pool.conv2d_relu_pool_forward(y, codes, work, x, w, b, *geometry, *sizes, False)
    np.testing.assert_array_equal(codes, 9.0)  # untouched
    want, _, _, _, _ = fused(x, w, b, np.zeros(pooled, np.float32), work, geometry, sizes)
    np.testing.assert_array_equal(y, want)


def test_one_pass_gradients_by_finite_differences():
    # Distinct, nonzero conv outputs: no tie or kink moves under the finite differences.
    B, C, H, W, F, K = 2, 2, 7, 6, 3, 2
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, C, H, W))
    w, b = rng.standard_normal((F, C, K, K)), rng.standard_normal(F)
    H_out, W_out = H - K + 1, W - K + 1
    dy = rng.standard_normal((B, F, H_out // 2, W_out // 2))
    work = np.empty(conv_pool.conv2d_relu_pool_workspace_shape(B, C, F, K, 1, H_out, W_out))
    geometry, sizes = (1, 0, 0), (H_out, W_out)

    def loss():
        y = np.empty(dy.shape)
        conv_pool.conv2d_relu_pool_forward(y, np.empty(dy.shape), work, x, w, b, *geometry,
                                           *sizes, False)
        return float(np.sum(y * dy))

    _, _, dx, dw, db = fused(x, w, b, dy, work, geometry, sizes)
    assert np.count_nonzero(dw) == dw.size
    for analytic, variable in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, numerical_gradient(loss, variable), rtol=1e-6,
                                   atol=1e-8)


def test_one_pass_codes_by_hand():
    # One 1x1 filter of weight 1 on a 4x4 image: the conv output is the image itself.
    x = np.array([[5, 5, 0, -1],
                  [1, 2, -3, -2],
                  [7, 1, 4, 4],
                  [1, 9, 4, 4]], np.float32).reshape(1, 1, 4, 4)
    w, b = np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)
    work = np.empty(conv_pool.conv2d_relu_pool_workspace_shape(1, 1, 1, 1, 1, 4, 4),
                    np.float32)
    dy = np.array([[1, 2], [3, 4]], np.float32).reshape(1, 1, 2, 2)
    y, codes, dx, dw, db = fused(x, w, b, dy, work, (1, 0, 0), (4, 4))
    np.testing.assert_array_equal(y[0, 0], [[5, 0], [9, 4]])
    # 5 first at the top left; the ReLU's zeros take no gradient; 9 at the bottom right
    # (code 3); ties of 4 go to the first.
    np.testing.assert_array_equal(codes[0, 0], [[0, conv_pool.NO_GRADIENT], [3, 0]])
    # dW = sum over windows of dy at the maximum times x there: 1*5 + 3*9 + 4*4
    assert dw[0, 0, 0, 0] == 48 and db[0] == 8
    # dx: each window's gradient at its first maximum (the weight is 1), 0 elsewhere.
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 4, 0],
                                             [0, 3, 0, 0]])
    _, _, untouched, _, _ = fused(x, w, b, dy, work, (1, 0, 0), (4, 4), need_dx=False)
    np.testing.assert_array_equal(untouched, np.full_like(x, 7.0))


def test_one_pass_same_bits_on_1_and_2_threads():
    x, w, b, work, geometry, sizes, pooled = make(CASES[3], np.float32)
    dy = np.random.default_rng(4).standard_normal(pooled).astype(np.float32)
    with threads(1):
        one = fused(x, w, b, dy, work, geometry, sizes)
    with threads(2):
        two = fused(x, w, b, dy, work, geometry, sizes)
    for got, want in zip(two, one, strict=True):
        np.testing.assert_array_equal(got, want)


def test_one_pass_propagates_nan():
    x, w, b, work, geometry, sizes, pooled = make(CASES[1], np.float64)
    x[1, 0, 2, 3] = np.nan
    dy = np.ones(pooled)
    y, _, _, dw, _ = fused(x, w, b, dy, work, geometry, sizes)
    want = three_kernels(x, w, b, dy, work, geometry, sizes)
    assert np.isnan(y[1]).any() and not np.isnan(y[0]).any()
    np.testing.assert_array_equal(y, want[0])
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(want[2]))
    assert np.isnan(dw).any()


def test_conv_pool_warmup():
    for dtype in (np.float32, np.float64):
        conv_pool._warmup(np.dtype(dtype))
