import numpy as np
import pytest
from naive import dropout, dropout_mask

from fastmnist._config import threads
from fastmnist._kernels import dropout as module
from fastmnist._kernels.dropout import dropout_backward, dropout_forward

SHAPES = [(1,), (7,), (3, 5), (2, 3, 1, 1), (2, 3, 5, 7), (1, 1, 13, 11)]
DTYPES = [np.float64, np.float32]


def tolerances(dtype):
    return dict(rtol=1e-14, atol=0) if dtype == np.float64 else dict(rtol=1e-6, atol=0)


def forward(x, rate, seed, step):
    y, mask = np.empty_like(x), np.empty(x.shape, np.uint8)
    dropout_forward(y, mask, x, rate, seed, step)
    return y, mask


def backward(dy, mask, rate):
    dx = np.empty_like(dy)
    dropout_backward(dx, mask, dy, rate)
    return dx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("rate", "seed", "step"),
                         [(0.1, 0, 0), (0.5, 12345, 3), (0.9, 2**64 - 1, 2**64 - 1)])
def test_forward_and_backward_match_reference(shape, dtype, rate, seed, step):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    y, mask = forward(x, rate, seed, step)
    want_mask = dropout_mask(shape, rate, seed, step)
    assert mask.dtype == np.uint8 and y.dtype == dtype
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_allclose(y, dropout(x, want_mask, rate), **tolerances(dtype))
    np.testing.assert_allclose(backward(dy, mask, rate), dropout(dy, want_mask, rate),
                               **tolerances(dtype))


def test_hand_worked_scaling():
    # rate 0.75 keeps a quarter of the elements and scales them by 1 / 0.25 = 4.
    x = np.arange(1.0, 9.0)
    y, mask = forward(x, 0.75, 7, 1)
    np.testing.assert_array_equal(y, np.where(mask == 1, 4 * x, 0.0))
    assert set(np.unique(mask)) <= {0, 1}


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(40), rng.standard_normal(40)
    rate, h = 0.3, 1e-6
    _, mask = forward(x, rate, 5, 2)
    dx = backward(w, mask, rate)  # loss = sum(w * y), so dloss/dy = w
    numeric = np.empty_like(x)
    for i in range(x.size):
        plus, minus = x.copy(), x.copy()
        plus[i] += h
        minus[i] -= h
        numeric[i] = (np.sum(w * forward(plus, rate, 5, 2)[0])
                      - np.sum(w * forward(minus, rate, 5, 2)[0])) / (2 * h)
    np.testing.assert_allclose(dx, numeric, rtol=1e-7, atol=1e-9)


def test_keep_fraction_is_one_minus_rate():
    # The kept count is Binomial(n, 1 - rate): sd = sqrt(1e6 * 0.3 * 0.7) ~ 458; a
    # 6-sd miss has probability 2e-9 for a good generator (the seed is fixed anyway).
    n, rate = 1_000_000, 0.3
    _, mask = forward(np.ones(n, np.float32), rate, 2024, 0)
    sd = np.sqrt(n * rate * (1 - rate))
    assert abs(int(mask.sum()) - n * (1 - rate)) < 6 * sd


def test_mask_is_a_function_of_seed_step_and_index():
    x = np.ones(1000)
    base = forward(x, 0.5, 1, 1)[1]
    np.testing.assert_array_equal(forward(x, 0.5, 1, 1)[1], base)
    # element i's draw does not depend on the array length
    np.testing.assert_array_equal(forward(x[:100].copy(), 0.5, 1, 1)[1], base[:100])
    for seed, step in [(2, 1), (1, 2), (0, 0), (1, 0), (0, 1)]:
        other = forward(x, 0.5, seed, step)[1]
        assert 400 < np.sum(other != base) < 600, (seed, step)  # about half differ


@pytest.mark.parametrize("dtype", DTYPES)
def test_rate_zero_is_the_identity(dtype):
    x = np.random.default_rng(3).standard_normal((4, 3, 5, 5)).astype(dtype)
    y, mask = forward(x, 0.0, 9, 9)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(mask, 1)
    np.testing.assert_array_equal(backward(x, mask, 0.0), x)


def test_nan_reaches_the_output():
    x = np.ones(200)
    x[::7] = np.nan
    y, mask = forward(x, 0.5, 4, 4)
    assert 0 < mask[::7].sum() < mask[::7].size  # some NaNs kept, some dropped
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    np.testing.assert_array_equal(np.isnan(backward(x, mask, 0.5)), np.isnan(x))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, np.nan])
def test_bad_rate_is_rejected(rate):
    x = np.ones(3)
    with pytest.raises(ValueError, match="rate"):
        forward(x, rate, 0, 0)
    with pytest.raises(ValueError, match="rate"):
        backward(x, np.ones(3, np.uint8), rate)


def test_bad_seed_step_and_arrays_are_rejected():
    x = np.ones((4, 6))
    for seed, step in [(-1, 0), (2**64, 0), (0, -1)]:
        with pytest.raises(ValueError, match="seed and step"):
            forward(x, 0.5, seed, step)
    y, mask = np.empty((6, 4)), np.empty((4, 6), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        dropout_forward(y, mask, x, 0.5, 0, 0)
    y = np.empty((4, 12))[:, ::2]  # a strided view: writing through a copy would be lost
    with pytest.raises(ValueError, match="C-contiguous"):
        dropout_forward(y, mask, x, 0.5, 0, 0)
    with pytest.raises(ValueError, match="uint8"):
        dropout_forward(np.empty_like(x), mask.astype(bool), x, 0.5, 0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_across_twins_and_thread_counts(dtype):
    x = np.random.default_rng(5).standard_normal(10007).astype(dtype)
    rate, seed, step = 0.4, 11, 13
    results = []
    for twin in ("serial", "parallel"):
        y, mask, dx = np.empty_like(x), np.empty(x.shape, np.uint8), np.empty_like(x)
        getattr(module._dropout_forward, twin)(y, mask, x, rate, 1 / (1 - rate),
                                               np.uint64(seed), np.uint64(step))
        getattr(module._dropout_backward, twin)(dx, mask, x, 1 / (1 - rate))
        results.append((y, mask, dx))
    for n in (1, 2):
        with threads(n):
            y, mask = forward(x, rate, seed, step)
            results.append((y, mask, backward(x, mask, rate)))
    for result in results[1:]:
        for got, want in zip(result, results[0], strict=True):
            np.testing.assert_array_equal(got, want)
