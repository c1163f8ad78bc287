"""Dense, activation and softmax cross-entropy kernels against tests/naive.py."""

import numpy as np
import pytest
from naive import (
    activation,
    dense_backward,
    dense_forward,
    logistic_cross_entropy,
    numerical_gradient,
    softmax,
    softmax_cross_entropy,
)

from fastmnist._config import threads
from fastmnist._kernels import activation as act
from fastmnist._kernels import dense, loss

SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 4), (13, 17, 11), (32, 784, 128), (3, 10, 1)]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def random(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def run_dense(dtype, B, K, N, rng):
    x, W, b = random(rng, (B, K), dtype), random(rng, (K, N), dtype), random(rng, N, dtype)
    dy = random(rng, (B, N), dtype)
    y, dx, dW, db = (np.empty((B, N), dtype), np.empty((B, K), dtype),
                     np.empty((K, N), dtype), np.empty(N, dtype))
    dense.dense_forward(y, x, W, b)
    dense.dense_backward(dx, dW, db, dy, x, W, True)
    return (x, W, b, dy), (y, dx, dW, db)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, K, N", SHAPES)
def test_dense_matches_reference(dtype, B, K, N):
    (x, W, b, dy), (y, dx, dW, db) = run_dense(dtype, B, K, N, np.random.default_rng(B + K))
    x64, W64, b64, dy64 = (a.astype(np.float64) for a in (x, W, b, dy))
    tol = TOL[dtype] if K < 100 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, dense_forward(x64, W64, b64), **tol)
    for got, want in zip((dx, dW, db), dense_backward(dy64, x64, W64), strict=True):
        np.testing.assert_allclose(got, want, **tol)


def test_dense_backward_can_skip_dx():
    rng = np.random.default_rng(0)
    x, W, dy = random(rng, (4, 3), np.float32), random(rng, (3, 2), np.float32), \
        random(rng, (4, 2), np.float32)
    dx = np.full((4, 3), 7.0, np.float32)
    dense.dense_backward(dx, np.empty((3, 2), np.float32), np.empty(2, np.float32), dy, x, W,
                         False)
    assert (dx == 7.0).all()


def test_dense_gradients_by_finite_differences():
    rng = np.random.default_rng(1)
    x, W, b = random(rng, (3, 5), np.float64), random(rng, (5, 4), np.float64), \
        random(rng, 4, np.float64)
    R = random(rng, (3, 4), np.float64)  # loss = sum(y * R), so dL/dy = R
    y = np.empty((3, 4))

    def loss_value():
        dense.dense_forward(y, x, W, b)
        return (y * R).sum()

    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty_like(b)
    dense.dense_backward(dx, dW, db, R, x, W, True)
    for analytic, variable in ((dx, x), (dW, W), (db, b)):
        np.testing.assert_allclose(analytic, numerical_gradient(loss_value, variable),
                                   rtol=1e-7, atol=1e-8)


ACTIVATION_NAMES = list(act.ACTIVATIONS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_forward_matches_reference(dtype, name):
    x = np.linspace(-30, 30, 7 * 13).astype(dtype).reshape(7, 13)
    y = np.empty_like(x)
    act.activation_forward(y, x, act.ACTIVATIONS[name])
    np.testing.assert_allclose(y, activation(name, x.astype(np.float64)), **TOL[dtype])


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_in_place_and_extremes(name):
    x = np.array([[-1e4, -1.0, 0.0, 1.0, 1e4]], np.float32)
    y = x.copy()
    act.activation_forward(y, y, act.ACTIVATIONS[name])  # in place
    assert np.isfinite(y).all()  # logistic of -1e4 must not overflow
    np.testing.assert_allclose(y, activation(name, x.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_backward_by_finite_differences(name):
    rng = np.random.default_rng(2)
    x = random(rng, (4, 6), np.float64)
    x[np.abs(x) < 0.05] = 0.3  # keep away from relu's kink
    R = random(rng, (4, 6), np.float64)
    y = np.empty_like(x)

    def loss_value():
        act.activation_forward(y, x, act.ACTIVATIONS[name])
        return (y * R).sum()

    loss_value()
    dx = np.empty_like(x)
    act.activation_backward(dx, R, y, act.ACTIVATIONS[name])
    np.testing.assert_allclose(dx, numerical_gradient(loss_value, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_propagates_nan(name):
    x = np.array([[np.nan, 1.0]], np.float32)
    y = np.empty_like(x)
    act.activation_forward(y, x, act.ACTIVATIONS[name])
    assert np.isnan(y[0, 0]) and not np.isnan(y[0, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, C", [(1, 1), (1, 2), (7, 3), (32, 10), (5, 13)])
def test_softmax_cross_entropy_matches_reference(dtype, B, C):
    rng = np.random.default_rng(B * C)
    logits = random(rng, (B, C), dtype, scale=3)
    labels = rng.integers(0, C, B)
    weights = rng.random(B).astype(dtype) + 0.1
    dlogits, row_loss = np.empty_like(logits), np.empty(B, dtype)
    value = loss.softmax_cross_entropy(dlogits, row_loss, logits, labels, weights)
    want_loss, want_grad = softmax_cross_entropy(logits.astype(np.float64), labels,
                                                 weights.astype(np.float64))
    np.testing.assert_allclose(value, want_loss, **TOL[dtype])
    np.testing.assert_allclose(dlogits, want_grad, **TOL[dtype])
    probs = np.empty_like(logits)
    loss.softmax(probs, logits)
    np.testing.assert_allclose(probs, softmax(logits.astype(np.float64)), **TOL[dtype])


def test_softmax_cross_entropy_hand_worked():
    # logits (0, ln 3): softmax = (1/4, 3/4). Label 1: loss = -ln(3/4) = 0.28768...
    # gradient = softmax - onehot = (1/4, -1/4).
    logits = np.array([[0.0, np.log(3.0)]])
    dlogits, row_loss = np.empty((1, 2)), np.empty(1)
    value = loss.softmax_cross_entropy(dlogits, row_loss, logits, np.array([1]), np.ones(1))
    assert value == pytest.approx(-np.log(0.75), rel=1e-14)
    np.testing.assert_allclose(dlogits, [[0.25, -0.25]], rtol=1e-14)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32)
    dlogits, row_loss = np.empty_like(logits), np.empty(2, np.float32)
    value = loss.softmax_cross_entropy(dlogits, row_loss, logits, np.array([1, 2]),
                                       np.ones(2, np.float32))
    # Row 0: the label's logit is 2e4 below the max, loss 2e4. Row 1: uniform, loss ln 3.
    assert value == pytest.approx((2e4 + np.log(3)) / 2, rel=1e-6)
    np.testing.assert_allclose(dlogits, [[0.5, -0.5, 0], [1 / 6, 1 / 6, -1 / 3]], atol=1e-7)


def test_softmax_cross_entropy_gradient_by_finite_differences():
    rng = np.random.default_rng(3)
    logits, labels, weights = random(rng, (6, 4), np.float64), rng.integers(0, 4, 6), \
        rng.random(6) + 0.5
    dlogits, row_loss = np.empty_like(logits), np.empty(6)

    def loss_value():
        return loss.softmax_cross_entropy(np.empty_like(logits), row_loss, logits, labels,
                                          weights)

    loss.softmax_cross_entropy(dlogits, row_loss, logits, labels, weights)
    np.testing.assert_allclose(dlogits, numerical_gradient(loss_value, logits),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logistic_cross_entropy_matches_reference_and_is_stable(dtype):
    rng = np.random.default_rng(5)
    logits = random(rng, (9, 1), dtype, scale=4)
    labels, weights = rng.integers(0, 2, 9), rng.random(9).astype(dtype) + 0.1
    dlogits, row_loss = np.empty_like(logits), np.empty(9, dtype)
    value = loss.logistic_cross_entropy(dlogits, row_loss, logits, labels, weights)
    want_loss, want_grad = logistic_cross_entropy(logits.astype(np.float64), labels,
                                                  weights.astype(np.float64))
    np.testing.assert_allclose(value, want_loss, **TOL[dtype])
    np.testing.assert_allclose(dlogits, want_grad, **TOL[dtype])
    # Logits of +-1e4 with the wrong label: loss 1e4 each, gradients +-1/2 (mean of two).
    huge = np.array([[1e4], [-1e4]], dtype)
    value = loss.logistic_cross_entropy(dlogits[:2], row_loss[:2], huge, np.array([0, 1]),
                                        np.ones(2, dtype))
    assert value == pytest.approx(1e4, rel=1e-6)
    np.testing.assert_allclose(dlogits[:2], [[0.5], [-0.5]])


def test_logistic_cross_entropy_gradient_by_finite_differences():
    rng = np.random.default_rng(6)
    logits, labels, weights = random(rng, (7, 1), np.float64), rng.integers(0, 2, 7), \
        rng.random(7) + 0.5
    dlogits, row_loss = np.empty_like(logits), np.empty(7)
    loss.logistic_cross_entropy(dlogits, row_loss, logits, labels, weights)

    def loss_value():
        return loss.logistic_cross_entropy(np.empty_like(logits), row_loss, logits, labels,
                                           weights)

    np.testing.assert_allclose(dlogits, numerical_gradient(loss_value, logits),
                               rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="outside"):
        loss.logistic_cross_entropy(dlogits, row_loss, logits, labels + 1, weights)


def test_softmax_cross_entropy_nan_and_bad_labels():
    logits = np.array([[np.nan, 1.0], [0.0, 1.0]], np.float32)
    dlogits, row_loss = np.empty_like(logits), np.empty(2, np.float32)
    value = loss.softmax_cross_entropy(dlogits, row_loss, logits, np.array([0, 1]),
                                       np.ones(2, np.float32))
    assert np.isnan(value) and np.isnan(dlogits[0]).all() and np.isfinite(dlogits[1]).all()
    with pytest.raises(ValueError, match="outside"):
        loss.softmax_cross_entropy(dlogits, row_loss, logits, np.array([0, 2]),
                                   np.ones(2, np.float32))


def all_outputs(B=96, K=300, N=70, C=10):
    """Run every kernel of this module once; return all their outputs."""
    rng = np.random.default_rng(4)
    (_, _, _, _), outputs = run_dense(np.float32, B, K, N, rng)
    h = outputs[0]
    results = list(outputs)
    for code in act.ACTIVATIONS.values():
        y, dx = np.empty_like(h), np.empty_like(h)
        act.activation_forward(y, h, code)
        act.activation_backward(dx, h, y, code)
        results += [y, dx]
    logits = h[:, :C].copy()
    dlogits, row_loss, probs = np.empty_like(logits), np.empty(B, np.float32), \
        np.empty_like(logits)
    value = loss.softmax_cross_entropy(dlogits, row_loss, logits, rng.integers(0, C, B),
                                       np.ones(B, np.float32))
    loss.softmax(probs, logits)
    binary = np.empty((B, 1), np.float32)
    binary_value = loss.logistic_cross_entropy(binary, row_loss, logits[:, :1].copy(),
                                               rng.integers(0, 2, B), np.ones(B, np.float32))
    return results + [dlogits, probs, np.array([value, binary_value]), binary]


def test_bitwise_identical_for_one_and_two_threads():
    with threads(1):
        one = all_outputs()
    with threads(2):
        two = all_outputs()
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel", [dense.dense_forward, dense.dense_backward,
                                    act.activation_forward, act.activation_backward,
                                    loss.softmax_cross_entropy, loss.softmax,
                                    loss.logistic_cross_entropy],
                         ids=lambda k: k.__name__)
def test_serial_twin_agrees_exactly(kernel, monkeypatch):
    # Route every call through the serial twin and compare with the parallel kernels.
    parallel = all_outputs()
    monkeypatch.setattr(kernel, "parallel", kernel.serial)
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in parallel]),
                                  np.concatenate([a.ravel() for a in all_outputs()]))
