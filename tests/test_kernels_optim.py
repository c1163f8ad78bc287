import numpy as np
import pytest
from naive import adam, sgd
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from fastmnist._config import threads
from fastmnist._kernels import optim
from fastmnist._kernels.optim import adam_step, sgd_step

DTYPES = [np.float64, np.float32]
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


def tolerances(dtype):
    return dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)


def run_sgd(theta, velocity, grads, lr, momentum, nesterov, l2, n_decay, kernel=sgd_step):
    theta, velocity = theta.copy(), velocity.copy()
    for grad in grads:
        kernel(theta, velocity, grad, lr, momentum, nesterov, l2, n_decay)
    return theta, velocity


def run_adam(theta, grads, l2, n_decay):
    theta, m, v = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    for t, grad in enumerate(grads, start=1):
        adam_step(theta, m, v, grad, ADAM["lr"], ADAM["beta1"], ADAM["beta2"], ADAM["eps"], t,
                  l2, n_decay)
    return theta, m, v


def problem(size, dtype, n_steps=5, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(size).astype(dtype)
    grads = [rng.standard_normal(size).astype(dtype) for _ in range(n_steps)]
    return theta, grads


def test_sgd_hand_worked_step():
    # theta = [1, -2 | 0.5]: two weights, then a bias; lr 0.1, momentum 0.9, l2 0.5.
    # g = grad + l2 * theta on the weights: [0.5 + 0.5, 0.25 - 1.0 | -1.0] = [1, -0.75 | -1]
    # velocity = 0.9 * [0.1, 0, 0] - 0.1 * g = [0.09 - 0.1, 0.075, 0.1] = [-0.01, 0.075, 0.1]
    theta, grad, velocity = np.array([1.0, -2.0, 0.5]), np.array([0.5, 0.25, -1.0]), np.array(
        [0.1, 0.0, 0.0])
    new_theta, new_velocity = run_sgd(theta, velocity, [grad], 0.1, 0.9, False, 0.5, 2)
    np.testing.assert_allclose(new_velocity, [-0.01, 0.075, 0.1], rtol=1e-14)
    # plain momentum: theta + velocity
    np.testing.assert_allclose(new_theta, [0.99, -1.925, 0.6], rtol=1e-14)
    # Nesterov: theta + 0.9 * velocity - 0.1 * g = theta + [-0.109, 0.1425, 0.19]
    new_theta, _ = run_sgd(theta, velocity, [grad], 0.1, 0.9, True, 0.5, 2)
    np.testing.assert_allclose(new_theta, [0.891, -1.8575, 0.69], rtol=1e-14)


def test_adam_hand_worked_first_step():
    # t = 1, lr 0.01, g = [0.2, -0.4], no decay:
    # m = 0.1 * g = [0.02, -0.04]; v = 0.001 * g**2 = [4e-5, 1.6e-4]
    # sqrt(v) = sqrt(0.001) * |g|, so m / sqrt(v) = sign(g) * 0.1 / sqrt(0.001) = sign(g) * sqrt(10)
    # lr_t = 0.01 * sqrt(1 - 0.999) / (1 - 0.9) = 0.1 * sqrt(0.001)
    # so each parameter moves by lr_t * sqrt(10) = 0.01 against its gradient, whatever |g|
    # (eps shifts that by about 0.01 * 1e-8 / sqrt(v) < 2e-8).
    theta, m, v = np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)
    adam_step(theta, m, v, np.array([0.2, -0.4]), 0.01, 0.9, 0.999, 1e-8, 1, 0.0, 0)
    np.testing.assert_allclose(m, [0.02, -0.04], rtol=1e-14)
    np.testing.assert_allclose(v, [4e-5, 1.6e-4], rtol=1e-14)
    np.testing.assert_allclose(theta, [0.99, -0.99], rtol=0, atol=2e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 1009])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_reference(size, dtype, nesterov):
    theta, grads = problem(size, dtype)
    n_decay = size // 2
    velocity = np.zeros_like(theta)
    got = run_sgd(theta, velocity, grads, 0.05, 0.9, nesterov, 1e-2, n_decay)
    want = (theta.astype(np.float64), velocity.astype(np.float64))
    for grad in grads:
        want = sgd(*want, grad, 0.05, 0.9, nesterov, 1e-2, n_decay)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 1009])
def test_adam_matches_reference(size, dtype):
    theta, grads = problem(size, dtype)
    n_decay = size - 1
    got = run_adam(theta, grads, 1e-2, n_decay)
    want = (theta.astype(np.float64), np.zeros(size), np.zeros(size))
    for t, grad in enumerate(grads, start=1):
        want = adam(*want, grad, *ADAM.values(), t, 1e-2, n_decay)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **tolerances(dtype))


def test_decay_reaches_the_weights_only():
    # Zero gradient, no momentum: weights shrink by (1 - lr * l2) = 0.99, biases stay put.
    theta = np.arange(1.0, 11.0)
    new_theta, _ = run_sgd(theta, np.zeros(10), [np.zeros(10)], 0.1, 0.0, False, 0.1, 6)
    np.testing.assert_allclose(new_theta[:6], 0.99 * theta[:6], rtol=1e-14)
    np.testing.assert_array_equal(new_theta[6:], theta[6:])
    new_theta, _, _ = run_adam(theta, [np.zeros(10)], 0.1, 6)
    assert np.all(new_theta[:6] < theta[:6])
    np.testing.assert_array_equal(new_theta[6:], theta[6:])


def sklearn_layout(rng, dtype):
    """Weights (3, 4) and biases (4,) as scikit-learn's lists, and as one flat buffer."""
    params = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(4).astype(dtype)]
    return params, np.concatenate([p.ravel() for p in params])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [0.0, 1e-2])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_scikit_learn(dtype, l2, nesterov):
    rng = np.random.default_rng(7)
    params, theta = sklearn_layout(rng, dtype)
    optimizer = SGDOptimizer(params, learning_rate_init=0.1, momentum=0.8, nesterov=nesterov)
    velocity = np.zeros_like(theta)
    for _ in range(4):
        grads, grad = sklearn_layout(rng, dtype)
        # scikit-learn's MLP adds the L2 term to the weight gradients before the optimizer
        optimizer.update_params(params, [grads[0] + l2 * params[0], grads[1]])
        sgd_step(theta, velocity, grad, 0.1, 0.8, nesterov, l2, 12)
    np.testing.assert_allclose(theta, np.concatenate([p.ravel() for p in params]),
                               **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_adam_matches_scikit_learn(dtype, l2):
    rng = np.random.default_rng(8)
    params, theta = sklearn_layout(rng, dtype)
    optimizer = AdamOptimizer(params, learning_rate_init=0.01, beta_1=0.8, beta_2=0.99,
                              epsilon=1e-7)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t in range(1, 5):
        grads, grad = sklearn_layout(rng, dtype)
        optimizer.update_params(params, [grads[0] + l2 * params[0], grads[1]])
        adam_step(theta, m, v, grad, 0.01, 0.8, 0.99, 1e-7, t, l2, 12)
    assert optimizer.t == 4
    np.testing.assert_allclose(theta, np.concatenate([p.ravel() for p in params]),
                               **tolerances(dtype))


def test_nan_reaches_the_output():
    theta, grads = problem(10, np.float32, n_steps=1)
    grads[0][3] = np.nan
    got = run_sgd(theta, np.zeros_like(theta), grads, 0.1, 0.9, True, 1e-2, 5)
    assert np.isnan(got[0][3]) and np.isnan(got[1][3]) and np.isnan(got[0]).sum() == 1
    got = run_adam(theta, grads, 1e-2, 5)
    assert all(np.isnan(a[3]) and np.isnan(a).sum() == 1 for a in got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_bitwise_identical_across_twins_and_thread_counts(method, dtype, monkeypatch):
    theta, grads = problem(10007, dtype, n_steps=3)
    if method == "sgd":
        kernel = sgd_step

        def run(twin):
            return run_sgd(theta, np.zeros_like(theta), grads, 0.1, 0.9, True, 1e-3, 6001,
                           kernel=twin)
    else:
        kernel = optim._adam_update

        def run(twin):
            monkeypatch.setattr(optim, "_adam_update", twin)
            return run_adam(theta, grads, 1e-3, 6001)

    with threads(1):
        want = run(kernel)
    with threads(2):
        two = run(kernel)
    for result in (two, run(kernel.serial), run(kernel.parallel)):
        for got, expected in zip(result, want, strict=True):
            np.testing.assert_array_equal(got, expected)
