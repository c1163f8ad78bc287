"""conv2d kernels against tests/naive.py: awkward shapes, gradients, threads, NaN."""

import naive as naive
import numpy as np
import pytest
from naive import numerical_gradient

from fastmnist._config import threads
from fastmnist._kernels import activation as act
from fastmnist._kernels import conv

# (B, C, H, W, F, K, stride, padding): 1x1 images, prime sizes, 1 and 3 channels, K = 1, 2,
# 3, 5, "same" with odd and even total padding, more images than work groups.
CASES = [
    (1, 1, 1, 1, 1, 1, 1, "valid"),
    (2, 3, 7, 5, 5, 3, 1, "valid"),
    (2, 3, 7, 5, 5, 3, 2, "valid"),
    (3, 3, 5, 7, 2, 1, 2, "valid"),
    (1, 3, 7, 5, 5, 2, 1, "same"),  # total padding 1 (odd): 0 before, 1 after
    (3, 1, 7, 5, 4, 2, 2, "same"),
    (2, 3, 7, 5, 5, 5, 1, "same"),  # total padding 4 (even): 2 and 2
    (2, 1, 6, 6, 4, 5, 2, "same"),  # total padding 3: 1 and 2
    (3, 2, 1, 1, 3, 3, 1, "same"),  # a 1x1 image seen through a 3x3 kernel
    (17, 3, 4, 4, 3, 2, 1, "valid"),
    (4, 33, 6, 7, 9, 3, 1, "valid"),
    # Wide enough for gemm's register tiles in every product: (dW | db) computed as
    # dy @ colT.T (F 16 > C*K*K + 1 = 10, as conv1), and transposed (F 8 < 37, as conv2).
    (3, 1, 12, 11, 16, 3, 1, "valid"),
    (2, 4, 10, 10, 8, 3, 1, "same"),
]
# float32: the products add up to 33 * 3 * 3 = 297 terms of size ~1 one after another, whose
# rounding errors grow to a few 1e-5 (float32's epsilon is 1.2e-7).
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=5e-5)}


def make(case, dtype, seed=0):
    B, C, H, W, F, K, stride, padding = case
    rng = np.random.default_rng(seed)
    H_out, W_out, pad_top, pad_left = conv.conv_output_shape(H, W, K, stride, padding)
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, K, K)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    dy = rng.standard_normal((B, F, H_out, W_out)).astype(dtype)
    work = np.empty(conv.conv2d_workspace_shape(B, C, F, K, stride, H_out, W_out), dtype)
    return x, w, b, dy, work, (stride, pad_top, pad_left)


def forward(x, w, b, work, geometry, y_shape, kernel=conv.conv2d_forward):
    y = np.full(y_shape, np.nan, x.dtype)
    kernel(y, work, x, w, b, *geometry)
    return y


def backward(x, w, dy, work, geometry, kernel=conv.conv2d_backward, need_dx=True):
    dx = np.full_like(x, 7.0)
    dw, db = np.full_like(w, np.nan), np.full(w.shape[0], np.nan, w.dtype)
    kernel(dx, dw, db, work, x, dy, w, *geometry, need_dx)
    return dx, dw, db


def run_both(x, w, b, dy, work, geometry, twin="__call__"):
    """[y, dx, dw, db] from the kernels (or from their ``twin``: "parallel", "serial")."""
    fwd, bwd = (getattr(k, twin) for k in (conv.conv2d_forward, conv.conv2d_backward))
    return [forward(x, w, b, work, geometry, dy.shape, fwd),
            *backward(x, w, dy, work, geometry, bwd)]


def test_conv_output_shape_by_hand():
    assert conv.conv_output_shape(28, 28, 3, 1, "valid") == (26, 26, 0, 0)
    assert conv.conv_output_shape(13, 13, 3, 1, "valid") == (11, 11, 0, 0)
    assert conv.conv_output_shape(28, 27, 3, 2, "valid") == (13, 13, 0, 0)
    assert conv.conv_output_shape(28, 28, 3, 1, "same") == (28, 28, 1, 1)
    # 7 rows, K 3, stride 2: 4 outputs need (4 - 1) * 2 + 3 = 9 rows, 2 of padding: 1 on top.
    assert conv.conv_output_shape(7, 7, 3, 2, "same") == (4, 4, 1, 1)
    # K 2, stride 1: 1 row of padding, all of it at the bottom, as in TensorFlow.
    assert conv.conv_output_shape(5, 6, 2, 1, "same") == (5, 6, 0, 0)
    assert conv.conv_output_shape(5, 5, 1, 2, "same") == (3, 3, 0, 0)


def test_conv_output_shape_matches_reference():
    for size in range(1, 12):
        for K in range(1, 6):
            for stride in (1, 2, 3):
                H_out, _, pad_top, _ = conv.conv_output_shape(size, size, K, stride, "same")
                assert (H_out, pad_top) == naive.same_padding(size, K, stride)
                if K <= size:
                    valid = conv.conv_output_shape(size, size, K, stride, "valid")
                    assert valid[0] == len(range(0, size - K + 1, stride))


def test_conv_output_shape_rejects():
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv_output_shape(2, 5, 3, 1, "valid")
    with pytest.raises(ValueError, match="padding"):
        conv.conv_output_shape(5, 5, 3, 1, "full")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_reference(case, dtype):
    x, w, b, dy, work, geometry = make(case, dtype)
    H_out, W_out = dy.shape[2:]
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    want_y = naive.conv2d_forward(x64, w64, b64, *geometry, H_out, W_out)
    np.testing.assert_allclose(forward(x, w, b, work, geometry, dy.shape), want_y,
                               **TOL[dtype])
    got = backward(x, w, dy, work, geometry)
    for g, want in zip(got, naive.conv2d_backward(x64, w64, dy64, *geometry), strict=True):
        np.testing.assert_allclose(g, want, **TOL[dtype])


@pytest.mark.parametrize("name", ["relu", "tanh", "logistic"])
@pytest.mark.parametrize("twin", ["parallel", "serial"])
@pytest.mark.parametrize("case", [CASES[1], CASES[9], CASES[11]])  # 1, 2 and 4 images a product
def test_conv2d_activation_in_the_kernel_equals_the_two_passes(case, twin, name):
    x, w, b, dy, work, geometry = make(case, np.float32)
    x[0, 0, 0, 0] = np.nan  # and NaN goes through both alike
    code = act.ACTIVATIONS[name]
    two_passes = forward(x, w, b, work, geometry, dy.shape)
    flat = two_passes.reshape(len(x), -1)
    act.activation_forward(flat, flat, code)
    fused = np.full_like(two_passes, 7.0)
    getattr(conv.conv2d_forward, twin)(fused, work, x, w, b, *geometry, code)
    np.testing.assert_array_equal(fused, two_passes)
    assert np.isnan(fused).any() and (name != "relu" or (fused == 0).any())


def test_conv2d_backward_can_skip_dx():
    x, w, b, dy, work, geometry = make(CASES[1], np.float64)
    dx, dw, db = backward(x, w, dy, work, geometry, need_dx=False)
    assert (dx == 7.0).all()
    _, want_dw, want_db = naive.conv2d_backward(x, w, dy, *geometry)
    np.testing.assert_allclose(dw, want_dw, **TOL[np.float64])
    np.testing.assert_allclose(db, want_db, **TOL[np.float64])


@pytest.mark.parametrize("case", [c for c in CASES if c[1] < 10 and c[0] < 10])
def test_conv2d_gradients_by_finite_differences(case):
    x, w, b, dy, work, geometry = make(case, np.float64, seed=1)
    R = dy  # loss = sum(y * R), so dL/dy = R

    def loss():  # the serial twin: hundreds of calls, no thread wake-ups on a busy machine
        return (forward(x, w, b, work, geometry, R.shape, conv.conv2d_forward.serial)
                * R).sum()

    for analytic, variable in zip(backward(x, w, R, work, geometry), (x, w, b), strict=True):
        np.testing.assert_allclose(analytic, numerical_gradient(loss, variable), rtol=1e-6,
                                   atol=1e-7)


THREAD_CASES = [(20, 3, 9, 7, 5, 3, 2, "same"), (32, 8, 13, 13, 16, 3, 1, "valid")]


@pytest.mark.parametrize("case", THREAD_CASES)
def test_conv2d_parallel_and_serial_twins_agree_exactly(case):
    x, w, b, dy, work, geometry = make(case, np.float32)
    parallel = run_both(x, w, b, dy, work, geometry, "parallel")
    serial = run_both(x, w, b, dy, work, geometry, "serial")
    for got, want in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", THREAD_CASES)
def test_conv2d_same_bits_on_1_and_2_threads(case):
    x, w, b, dy, work, geometry = make(case, np.float32)
    with threads(1):
        one = run_both(x, w, b, dy, work, geometry)
    with threads(2):
        two = run_both(x, w, b, dy, work, geometry)
    for got, want in zip(two, one, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", THREAD_CASES)
def test_conv2d_same_bits_whatever_the_work_was_made_for(case):
    # Work made for 1 thread (one slot) or 16 (a slot per group), or for a larger batch:
    # the groups, and so the bits, stay the same.
    x, w, b, dy, work, geometry = make(case, np.float32)
    B, C, H, W, F, K, stride, _ = case
    H_out, W_out = dy.shape[2:]
    results = []
    for batch, n_threads in ((B, 1), (B, 16), (2 * B + 3, 2)):
        shape = conv.conv2d_workspace_shape(batch, C, F, K, stride, H_out, W_out, n_threads)
        results.append(run_both(x, w, b, dy, np.empty(shape, np.float32), geometry))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


def test_conv2d_propagates_nan():
    x, w, b, dy, work, geometry = make(CASES[7], np.float64)
    x[1, 0, 2, 3] = np.nan
    H_out, W_out = dy.shape[2:]
    y = forward(x, w, b, work, geometry, dy.shape)
    want_y = naive.conv2d_forward(x, w, b, *geometry, H_out, W_out)
    assert np.isnan(y).any() and not np.isnan(y[0]).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want_y))
    _, dw, _ = backward(x, w, dy, work, geometry)
    assert np.isnan(dw).any()
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(naive.conv2d_backward(x, w, dy,
                                                                               *geometry)[1]))


def test_conv2d_rejects_small_work():
    x, w, b, dy, work, geometry = make(CASES[1], np.float64)
    small = np.empty(work.size // 3)  # the partials and less than one thread's scratch
    with pytest.raises(ValueError, match="work"):
        forward(x, w, b, small, geometry, dy.shape)
    with pytest.raises(ValueError, match="work"):
        backward(x, w, dy, small, geometry)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_warmup(dtype):
    conv._warmup(np.dtype(dtype))
