import numpy as np
import pytest
from naive import batchnorm_backward, batchnorm_eval, batchnorm_train

from fastmnist._config import threads
from fastmnist._kernels.norm import (
    batchnorm2d_backward,
    batchnorm2d_forward_eval,
    batchnorm2d_forward_train,
)

# Batch of 1, 1x1 images, one channel, three channels, prime sizes.
SHAPES = [(1, 3, 5, 7), (7, 3, 1, 1), (2, 1, 1, 1), (5, 1, 13, 11), (3, 2, 2, 3), (4, 5, 6, 7)]
DTYPES = [np.float64, np.float32]
MOMENTUM, EPS = 0.1, 1e-5


def tolerances(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)


def make(shape, dtype, seed=0):
    """x with a large mean next to its spread, and per-channel parameters and statistics."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (50.0 + 3.0 * rng.standard_normal(shape)).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    running_mean = rng.standard_normal(C).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, C).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, running_mean, running_var, dy


def forward_train(x, gamma, beta, running_mean, running_var, kernel=batchnorm2d_forward_train):
    """Runs the kernel on fresh outputs; returns y, x_hat, inv_std and the running stats."""
    y, x_hat, inv_std = np.empty_like(x), np.empty_like(x), np.empty_like(gamma)
    running_mean, running_var = running_mean.copy(), running_var.copy()
    kernel(y, running_mean, running_var, x_hat, inv_std, x, gamma, beta, MOMENTUM, EPS)
    return y, x_hat, inv_std, running_mean, running_var


def forward_eval(x, gamma, beta, running_mean, running_var, kernel=batchnorm2d_forward_eval):
    y = np.empty_like(x)
    kernel(y, x, gamma, beta, running_mean, running_var, EPS)
    return (y,)


def backward(x, gamma, dy, kernel=batchnorm2d_backward):
    _, x_hat, inv_std, _, _ = forward_train(x, gamma, gamma, gamma, gamma)
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    kernel(dx, dgamma, dbeta, x_hat, inv_std, dy, gamma)
    return dx, dgamma, dbeta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_train_matches_reference(shape, dtype):
    x, gamma, beta, running_mean, running_var, _ = make(shape, dtype)
    got = forward_train(x, gamma, beta, running_mean, running_var)
    want = batchnorm_train(x, gamma, beta, running_mean, running_var, MOMENTUM, EPS)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_eval_matches_reference(shape, dtype):
    x, gamma, beta, running_mean, running_var, _ = make(shape, dtype)
    x = (x - 50).astype(dtype)  # near the running statistics, as at inference
    (y,) = forward_eval(x, gamma, beta, running_mean, running_var)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, batchnorm_eval(x, gamma, beta, running_mean, running_var, EPS),
                               **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_reference(shape, dtype):
    x, gamma, _, _, _, dy = make(shape, dtype)
    got = backward(x, gamma, dy)
    want = batchnorm_backward(dy, x, gamma, EPS)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **tolerances(dtype))


def test_running_statistics_hand_worked():
    # One channel holding 1, 2, 3, 6: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5,
    # unbiased 14 / 3. With momentum 0.1 from (0, 1): mean 0.3, var 0.9 + 0.1 * 14/3.
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 1, 2)
    one = np.ones(1)
    y, x_hat, inv_std, running_mean, running_var = forward_train(x, one, 0 * one, 0 * one, one)
    np.testing.assert_allclose(inv_std, [1 / np.sqrt(3.5 + EPS)], rtol=1e-14)
    np.testing.assert_allclose(x_hat.ravel(), np.array([-2, -1, 0, 3]) / np.sqrt(3.5 + EPS),
                               rtol=1e-14)
    np.testing.assert_array_equal(y, x_hat)  # gamma 1, beta 0
    np.testing.assert_allclose(running_mean, [0.3], rtol=1e-14)
    np.testing.assert_allclose(running_var, [0.9 + 0.1 * 14 / 3], rtol=1e-14)


def test_constant_channel_gives_beta():
    # Zero variance: x_hat is 0 (eps keeps inv_std finite), so y is beta.
    x = np.full((3, 2, 2, 2), 7.0)
    gamma, beta = np.array([2.0, 3.0]), np.array([-1.0, 0.5])
    y, x_hat, inv_std, _, _ = forward_train(x, gamma, beta, np.zeros(2), np.ones(2))
    np.testing.assert_array_equal(x_hat, 0.0)
    np.testing.assert_array_equal(y[:, 0], -1.0)
    np.testing.assert_array_equal(y[:, 1], 0.5)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(EPS))


def test_one_value_per_channel_is_rejected():
    # The unbiased variance of a single value is undefined, as in PyTorch's training mode.
    x, gamma, beta, running_mean, running_var, _ = make((1, 2, 1, 1), np.float64)
    with pytest.raises(ValueError, match="more than one value"):
        forward_train(x, gamma, beta, running_mean, running_var)


def test_gradients_match_finite_differences():
    # loss = sum(w * y) for a fixed random w, so dloss/dy = w.
    x, gamma, beta, running_mean, running_var, w = make((3, 2, 2, 3), np.float64, seed=1)

    def loss(x, gamma, beta):
        return np.sum(w * forward_train(x, gamma, beta, running_mean, running_var)[0])

    _, x_hat, inv_std, _, _ = forward_train(x, gamma, beta, running_mean, running_var)
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    batchnorm2d_backward(dx, dgamma, dbeta, x_hat, inv_std, w, gamma)

    def numeric(argument):
        args = [x, gamma, beta]
        grad = np.empty_like(args[argument])
        h = 1e-6
        for index in np.ndindex(grad.shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[argument][index] += h
            minus[argument][index] -= h
            grad[index] = (loss(*plus) - loss(*minus)) / (2 * h)
        return grad

    np.testing.assert_allclose(dx, numeric(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dgamma, numeric(1), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, numeric(2), rtol=1e-6, atol=1e-8)


def test_nan_reaches_the_output():
    x, gamma, beta, running_mean, running_var, dy = make((3, 2, 4, 4), np.float32)
    x[1, 1, 2, 3] = np.nan
    y, _, _, new_mean, new_var = forward_train(x, gamma, beta, running_mean, running_var)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, 0]).all()  # its channel's mean is NaN
    assert np.isnan(new_mean[1]) and np.isnan(new_var[1])
    (y,) = forward_eval(x, gamma, beta, running_mean, running_var)
    assert np.isnan(y).sum() == 1 and np.isnan(y[1, 1, 2, 3])
    dy[0, 0, 0, 0] = np.nan
    dx, dgamma, dbeta = backward(x * 0 + 1, gamma, dy)
    assert np.isnan(dx[:, 0]).all() and np.isnan(dgamma[0]) and np.isnan(dbeta[0])


CASES = {
    "forward_train": (batchnorm2d_forward_train, forward_train, (0, 1, 2, 3, 4)),
    "forward_eval": (batchnorm2d_forward_eval, forward_eval, (0, 1, 2, 3, 4)),
    "backward": (batchnorm2d_backward, backward, (0, 1, 5)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_bitwise_identical_across_twins_and_thread_counts(case, dtype):
    # More channels and planes than threads, so the work really is split.
    kernel, run, picks = CASES[case]
    inputs = make((6, 5, 7, 9), dtype, seed=2)
    args = [inputs[i] for i in picks]
    with threads(1):
        one = run(*args)
    with threads(2):
        two = run(*args)
    serial = run(*args, kernel=kernel.serial)
    parallel = run(*args, kernel=kernel.parallel)
    for a, b, c, d in zip(one, two, serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, d)
        np.testing.assert_array_equal(a, c)
