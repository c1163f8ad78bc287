"""The one-call MLP prediction kernel against NumPy, and row by row the same at any split."""

import numpy as np
import pytest
from naive import activation, gather, softmax

from fastmnist._fused import DenseForward, dense_layer_table
from fastmnist._kernels import mlp_forward
from fastmnist._layers import Activation, Conv2D, Dense, Dropout, Flatten
from fastmnist._network import Network


def network(n_features=7, sizes=(9, 5), names=("relu", "tanh"), n_outputs=3, seed=0):
    layers = []
    for size, name in zip(sizes, names, strict=True):
        layers += [Dense(size), Activation(name)]
    output = "softmax" if n_outputs > 1 else "logistic"
    net = Network(layers + [Dense(n_outputs)], (n_features,), output, np.float32)
    net.initialize(np.random.RandomState(seed))
    return net


def naive_proba(net, X, divisor):
    """Class probabilities in float64, layer by layer."""
    h = gather(X, np.arange(len(X)), divisor).astype(np.float64)
    names = [layer.name for layer in net.layers[1::2]]
    for k, layer in enumerate(net.layers[0::2]):
        (n_in,), (n_out,) = layer.input_shape, layer.output_shape
        w_at, b_at = net.offset(2 * k, "W"), net.offset(2 * k, "b")
        W = net.theta[w_at:w_at + n_in * n_out].reshape(n_in, n_out).astype(np.float64)
        h = h @ W + net.theta[b_at:b_at + n_out]
        if k < len(names):
            h = activation(names[k], h)
    if h.shape[1] == 1:
        p = 1 / (1 + np.exp(-h[:, 0]))
        return np.column_stack([1 - p, p])
    return softmax(h)


def data(n, n_features=7, dtype=np.float32, seed=1):
    rng = np.random.RandomState(seed)
    if dtype == np.uint8:
        return rng.randint(0, 256, (n, n_features)).astype(np.uint8), 255.0
    return rng.normal(0, 2, (n, n_features)).astype(dtype), 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("names", [("relu", "tanh"), ("logistic", "identity")])
@pytest.mark.parametrize("n_outputs", [1, 4])
def test_probabilities_match_numpy(dtype, names, n_outputs):
    net = network(names=names, n_outputs=n_outputs)
    X, divisor = data(75, dtype=dtype)
    proba, finite = DenseForward(net).predict_proba(X, n_parts=2)
    assert finite
    assert proba.shape == (75, max(2, n_outputs)) and proba.dtype == np.float32
    np.testing.assert_allclose(proba, naive_proba(net, X, divisor), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 8, 31, 33, 100])
def test_every_row_has_the_same_bits_in_any_block_and_split(n):
    # Rows are independent, each output accumulated in input order: a row's answer cannot
    # depend on its neighbours, the block it falls in, or the thread that computes it.
    net = network(n_features=40, sizes=(33, 17), names=("relu", "relu"))
    X, _ = data(n, n_features=40)
    alone = np.vstack([DenseForward(net).predict_proba(X[i:i + 1], 1)[0] for i in range(n)])
    for n_parts in (1, 2, 3, 7):
        proba, _ = DenseForward(net).predict_proba(X, n_parts)
        np.testing.assert_array_equal(proba, alone)
    table, size, _ = dense_layer_table(net, 5)  # blocks of 5 rows, 4 parts
    out = np.empty((n, 10), np.float32)
    mlp_forward.predict_proba.parallel(out[:, :3], X, 1.0, net.theta, table,
                                       np.empty((4, size), np.float32))
    np.testing.assert_array_equal(out[:, :3], alone)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n_parts", [1, 2])
def test_rows_with_nan_or_infinity_are_reported(bad, n_parts):
    net = network()
    X, _ = data(50)
    X[[3, 40], [0, 6]] = bad
    table, size, _ = dense_layer_table(net, 8)
    kernel = mlp_forward.predict_proba.parallel if n_parts > 1 else mlp_forward.predict_proba.serial
    n_bad = kernel(np.empty((50, 3), np.float32), X, 1.0, net.theta, table,
                   np.empty((n_parts, size), np.float32))
    assert n_bad == 2
    assert not DenseForward(net).predict_proba(X, n_parts)[1]
    assert DenseForward(net).predict_proba(X[4:40], n_parts)[1]


def test_supports_only_float32_dense_stacks():
    assert DenseForward.supports(network())
    assert not DenseForward.supports(Network([Dense(3)], (4,), "softmax", np.float64))
    conv = Network([Conv2D(2, 3), Activation("relu"), Flatten(), Dense(3)], (1, 5, 5),
                   "softmax")
    assert not DenseForward.supports(conv)
    dropout = Network([Dense(4), Activation("relu"), Dropout(0.5), Dense(3)], (6,), "softmax")
    assert not DenseForward.supports(dropout)
