"""The one-call prediction of a few images through a CNN: the bits of the layers one by one,
the values of plain NumPy, and bad input reported."""

import numba
import numpy as np
import pytest
from naive import activation, conv2d_forward, maxpool2d_forward, softmax

from fastmnist._fused import ConvForward, _dense_stack
from fastmnist._kernels import cnn_forward
from fastmnist._kernels.activation import IDENTITY, RELU, TANH
from fastmnist._layers import (
    Activation,
    BatchNorm2D,
    ChannelsFirst,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
)
from fastmnist._network import Network

IMAGE = (1, 14, 14)


def blocks(filters=(3, 5), padding="valid", K=3, pool=2, name="relu"):
    layers = []
    for f in filters:
        layers += [Conv2D(f, K, 1, padding), Activation(name), MaxPool2D(pool)]
    return layers


def network(layers=None, tail=None, image=IMAGE, output="softmax", dtype=np.float32, seed=0):
    layers = blocks() if layers is None else layers
    tail = [Flatten(), Dense(6), Activation("tanh"), Dropout(0.5), Dense(4)] if tail is None \
        else tail
    net = Network(layers + tail, image, output, dtype)
    net.initialize(np.random.RandomState(seed))
    return net


def data(n, dtype=np.float32, seed=1):
    rng = np.random.RandomState(seed)
    if dtype == np.uint8:
        return rng.randint(0, 256, (n, int(np.prod(IMAGE)))).astype(np.uint8)
    return rng.normal(0.5, 1, (n, int(np.prod(IMAGE)))).astype(dtype)


def layer_by_layer(net, X):
    x = (X / np.float32(255) if X.dtype == np.uint8 else X).astype(np.float32)
    out = np.empty((len(X), net.output_shape[0]), np.float32)
    return net.predict_proba(x.reshape(len(X), *net.input_shape), out)


def naive_proba(net, X):
    """Class probabilities in float64, from each layer's parameters, with NumPy alone."""
    h = X.reshape(len(X), *net.input_shape).astype(np.float64)
    for layer in net.layers:
        if isinstance(layer, Conv2D):
            _, H_out, W_out = layer.output_shape
            h = conv2d_forward(h, layer.params["W"], layer.params["b"], 1, layer.pad_top,
                               layer.pad_left, H_out, W_out)
        elif isinstance(layer, Activation):
            h = activation(layer.name, h)
        elif isinstance(layer, MaxPool2D):
            h, _ = maxpool2d_forward(h, layer.pool, layer.step)
        elif isinstance(layer, Flatten):
            h = h.reshape(len(h), -1)
        elif isinstance(layer, Dense):
            h = h @ layer.params["W"] + layer.params["b"]
    return softmax(h)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("n", [1, 3, 16])
def test_probabilities_are_the_layer_by_layer_ones(dtype, padding, n):
    net = network(blocks(padding=padding))
    X = data(n, dtype)
    expected = layer_by_layer(net, X)
    for threads in range(1, min(3, numba.config.NUMBA_NUM_THREADS) + 1):
        proba, finite = ConvForward(net).predict_proba(X, threads)
        assert finite and proba.shape == (n, 4) and proba.dtype == np.float32
        np.testing.assert_array_equal(proba, expected)  # the same bits, on any threads
    x = X / 255 if dtype == np.uint8 else X
    np.testing.assert_allclose(proba, naive_proba(net, x), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread: nothing to share")
def test_the_kernel_runs_on_the_threads_it_is_given_then_numbas_setting_is_back(monkeypatch):
    calls = []
    monkeypatch.setattr(cnn_forward.predict_proba, "parallel", lambda *args: calls.append(
        (numba.get_num_threads(), args[-1])) or 0)  # 0: no NaN in X
    forward, before = ConvForward(network(blocks())), numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for threads in (2, 1):
            assert forward.predict_proba(data(1), threads)[1]
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    assert calls == [(2, 2), (1, 1)]


def test_one_block_and_the_logits_straight_after_it():
    net = network(blocks(filters=(7,)), [Flatten(), Dense(3)])
    X = data(2)
    proba, finite = ConvForward(net).predict_proba(X, 1)
    assert finite
    np.testing.assert_array_equal(proba, layer_by_layer(net, X))
    np.testing.assert_allclose(proba, naive_proba(net, X), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("where", [0, -1])
def test_transformed_filters_follow_every_change_of_the_weights(where):
    # On one thread and on two, a change of the first (0) or the last (-1) of the second
    # block's weights is seen: its transformed filters are computed again.
    net = network()
    forward, X = ConvForward(net), data(1)
    W = net.layers[3].params["W"].reshape(-1)  # the second convolution's, a view into theta
    for threads in range(1, min(2, numba.config.NUMBA_NUM_THREADS) + 1):
        before, _ = forward.predict_proba(X, threads)
        W[where] += 1
        after, _ = forward.predict_proba(X, threads)
        assert not np.array_equal(after, before)
        np.testing.assert_array_equal(after, layer_by_layer(net, X))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_are_reported_and_huge_values_are_not(bad):
    net, X = network(), data(3)
    X[1, 40] = bad
    assert not ConvForward(net).predict_proba(X, 1)[1]
    assert ConvForward(net).predict_proba(X[2:], 1)[1]
    X[1, :] = 3e38  # finite, though their sum would not be
    assert ConvForward(net).predict_proba(X, 1)[1]


def test_supports_float32_winograd_blocks_then_dense_layers_and_a_softmax():
    assert ConvForward.supports(network())
    assert ConvForward.supports(network(blocks(padding="same", filters=(2, 3, 4)),
                                        image=(1, 16, 16)))
    assert ConvForward.supports(network(tail=[Flatten(), Dropout(0.2), Dense(3)]))
    unsupported = [
        network(dtype=np.float64),
        network(output="logistic", tail=[Flatten(), Dense(1)]),
        network(blocks(K=5)),
        network(blocks(pool=3)),
        network(blocks(name="tanh")),
        network([Conv2D(3, 3), BatchNorm2D(), Activation("relu"), MaxPool2D(2)]),
        network([ChannelsFirst()] + blocks(), image=(14, 14, 1)),
        network([Conv2D(3, 3, 2), Activation("relu"), MaxPool2D(2)]),  # stride 2
        network([Conv2D(3, 3), Activation("relu")]),  # no pool
        network([], [Flatten(), Dense(4)]),  # no convolution at all
        network(tail=[Flatten(), Dense(5), Flatten(), Dense(4)]),
    ]
    for net in unsupported:
        assert not ConvForward.supports(net), net


def test_dense_stack_names_each_dense_layer_and_its_activation():
    layers = [Flatten(), Dense(6), Activation("relu"), Dropout(0.5), Dense(5),
              Activation("tanh"), Dense(4)]
    assert _dense_stack(layers, 1) == [(1, RELU), (4, TANH), (6, IDENTITY)]
    assert _dense_stack(layers, 0) is None  # Flatten is not a dense layer
    assert _dense_stack(layers[:-1], 1) is None  # not ending with the logits
    assert _dense_stack([Dense(3), Activation("relu"), Activation("tanh"), Dense(2)], 0) \
        is None
    assert _dense_stack([Activation("relu"), Dense(2)], 0) is None  # no Dense before it


def test_warmup_runs_every_build():
    cnn_forward._warmup(np.dtype(np.float32))
    assert len(cnn_forward.predict_proba.parallel.overloads) >= 2  # uint8 and float32 X
    assert len(cnn_forward.predict_proba.serial.overloads) >= 2
