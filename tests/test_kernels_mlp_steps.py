"""The fused MLP training steps against a plain NumPy step, and at any thread count."""

import numpy as np
import pytest
from naive import activation, adam, gather, softmax_cross_entropy

from fastmnist._config import threads
from fastmnist._fused import FusedAdam
from fastmnist._kernels import mlp_steps
from fastmnist._layers import Activation, Dense
from fastmnist._network import Network
from fastmnist._optim import Adam

ADAM = dict(learning_rate_init=1e-2, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
ACTIVATIONS = ("relu", "tanh", "logistic")


def network(n_features=6, sizes=(5, 4), n_classes=3, names=("relu", "tanh")):
    layers = []
    for size, name in zip(sizes, names, strict=True):
        layers += [Dense(size), Activation(name)]
    net = Network(layers + [Dense(n_classes)], (n_features,), "softmax", np.float32)
    net.initialize(np.random.RandomState(0))
    return net


def derivative(name, h):
    # f'(x) from the output h = f(x), as scikit-learn computes it
    return {"relu": (h > 0) * 1.0, "tanh": 1 - h**2, "logistic": h * (1 - h)}[name]


def weights_and_bias(theta, dense):
    layer, w_at, b_at = dense
    (n_in,), (n_out,) = layer.input_shape, layer.output_shape
    return theta[w_at:w_at + n_in * n_out].reshape(n_in, n_out), theta[b_at:b_at + n_out]


def naive_steps(net, X, divisor, labels, weights, order, batch_size, alpha):
    """theta, m, v and sum(batch loss x rows) after Adam steps over ``order``, in float64."""
    denses = [(layer, net.offset(2 * k, "W"), net.offset(2 * k, "b"))
              for k, layer in enumerate(net.layers[0::2])]
    names = [layer.name for layer in net.layers[1::2]]
    theta = net.theta.astype(np.float64)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    total = 0.0
    for t, start in enumerate(range(0, len(order), batch_size), start=1):
        index = order[start:start + batch_size]
        w = weights[index].astype(np.float64)
        params = [weights_and_bias(theta, dense) for dense in denses]
        hs = [gather(X, index, divisor).astype(np.float64)]
        for k, (W, b) in enumerate(params):
            z = hs[-1] @ W + b
            hs.append(activation(names[k], z) if k < len(names) else z)
        loss, delta = softmax_cross_entropy(hs[-1], labels[index], w)
        grad = np.zeros_like(theta)
        for k in range(len(denses) - 1, -1, -1):
            (_, w_at, b_at), (W, _) = denses[k], params[k]
            grad[w_at:w_at + W.size] = (hs[k].T @ delta).ravel()
            grad[b_at:b_at + W.shape[1]] = delta.sum(axis=0)
            if k > 0:
                delta = (delta @ W.T) * derivative(names[k - 1], hs[k])
        squares = sum(np.sum(W**2) for W, _ in params)
        total += (loss + 0.5 * alpha * squares / w.sum()) * len(index)
        theta, m, v = adam(theta, m, v, grad, ADAM["learning_rate_init"], ADAM["beta_1"],
                           ADAM["beta_2"], ADAM["epsilon"], t, alpha / w.sum(), net.n_decay)
    return theta, m, v, total


def problem(dtype, n=11, n_features=6, n_classes=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, n_features)).astype(dtype)
    if dtype == np.float32:
        X /= 255
    labels = rng.integers(0, n_classes, n).astype(np.int64)
    weights = rng.uniform(0.5, 2, n).astype(np.float32)
    order = rng.permutation(n).astype(np.int64)
    return X, labels, weights, order


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
@pytest.mark.parametrize("names", [("relu", "tanh"), ("logistic", "relu")])
def test_steps_equal_plain_numpy(dtype, alpha, names):
    X, labels, weights, order = problem(dtype)
    net = network(names=names)
    expected = naive_steps(net, X, 255.0 if dtype == np.uint8 else 1.0, labels, weights,
                           order, 4, alpha)
    optimizer = Adam(net.n_params, np.float32, **ADAM)
    fused = FusedAdam(net, optimizer, X, labels, weights, batch_size=4)
    total = fused.run(order, 0, len(order), alpha)  # batches of 4, 4 and 3 rows
    assert optimizer.t == 3
    for got, want in zip((net.theta, optimizer.m, optimizer.v), expected[:3], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert total == pytest.approx(expected[3], rel=1e-5)


def test_chunks_continue_where_the_last_one_stopped():
    X, labels, weights, order = problem(np.float32, n=20)
    whole, parts = network(), network()
    FusedAdam(whole, Adam(whole.n_params, np.float32, **ADAM), X, labels, weights, 4).run(
        order, 0, 20, 0.1)
    optimizer = Adam(parts.n_params, np.float32, **ADAM)
    fused = FusedAdam(parts, optimizer, X, labels, weights, 4)
    fused.run(order, 0, 8, 0.1)
    fused.run(order, 8, 12, 0.1)
    assert optimizer.t == 5
    np.testing.assert_array_equal(parts.theta, whole.theta)


def test_same_bits_for_any_split_over_threads():
    X, labels, weights, order = problem(np.float32, n=37, n_features=20)
    results = []
    for n_parts in (1, 2, 3, 7):  # 7 parts of a 5-row batch: some get no rows at all
        net = network(n_features=20, sizes=(9, 6))
        optimizer = Adam(net.n_params, np.float32, **ADAM)
        fused = FusedAdam(net, optimizer, X, labels, weights, 5)
        mlp_steps.adam_steps(
            net.theta, net.grad, optimizer.m, optimizer.v, fused.WT, fused.acts, fused.deltas,
            fused.row_loss, fused.column_squares, X, 1.0, labels, weights, order, 0, 37, 5,
            fused.layers, n_parts, 1e-2, 0.9, 0.999, 1e-8, 0, 0.1)
        results.append((net.theta.copy(), optimizer.m.copy(), optimizer.v.copy()))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)
    with threads(1):
        one = network(n_features=20, sizes=(9, 6))
        FusedAdam(one, Adam(one.n_params, np.float32, **ADAM), X, labels, weights, 5).run(
            order, 0, 37, 0.1)
    np.testing.assert_array_equal(one.theta, results[0][0])


def test_subnormals_flush_inside_and_the_callers_mode_comes_back():
    tiny = np.float32(1e-38)  # the smallest normal float32 is 1.18e-38
    assert tiny / np.float32(4) != 0  # a subnormal, before
    X, labels, weights, order = problem(np.float32)
    net = network()
    FusedAdam(net, Adam(net.n_params, np.float32, **ADAM), X, labels, weights, 4).run(
        order, 0, 11, 0.0)
    assert tiny / np.float32(4) != 0  # and after: the flush stayed inside the kernel


def test_supports_only_what_it_implements():
    X = np.zeros((4, 6), np.float32)
    net = network()
    adam_ = Adam(net.n_params, np.float32, **ADAM)
    assert FusedAdam.supports(net, adam_, X)
    assert FusedAdam.supports(net, adam_, X.astype(np.uint8))
    assert not FusedAdam.supports(net, adam_, X.astype(np.float64))
    assert not FusedAdam.supports(net, None, X)  # lbfgs, or SGD
    binary = Network([Dense(4), Activation("relu"), Dense(1)], (6,), "logistic")
    assert not FusedAdam.supports(binary, adam_, X)
    wide = Network([Dense(4), Activation("relu"), Activation("relu"), Dense(3)], (6,),
                   "softmax")
    assert not FusedAdam.supports(wide, adam_, X)
