"""The fast paths: many Adam steps per compiled call, and prediction in one call.

``FusedAdam`` lays a network of dense layers out for ``_kernels.mlp_steps.adam_steps`` and
runs an epoch through it a chunk of batches at a time. ``DenseForward`` predicts with the
same layout through ``_kernels.mlp_forward``. The arithmetic is the layer-by-layer
path's (the same loss, gradients, L2 term and Adam update), in a different order of
multiply-adds, so the weights agree to float32 rounding rather than bit for bit.

``ConvForward`` predicts a few rows through a CNN (``_kernels.cnn_forward``), with the bits
of the layer-by-layer path.
"""

from __future__ import annotations

import numba
import numpy as np

from ._kernels import cnn_forward, mlp_forward, mlp_steps, winograd
from ._kernels._jit import numba_threads
from ._kernels.activation import IDENTITY
from ._layers import Activation, Dense, Dropout, Flatten
from ._network import Network
from ._optim import Adam

# Batches per compiled call: long enough that the call's own cost (~20 us) vanishes, short
# enough for a lively progress bar and a prompt KeyboardInterrupt.
CHUNK_BATCHES = 64

# What the fused kernels read: pixel intensities (divided by 255) or float32 values.
INPUT_DTYPES = (np.uint8, np.float32)


def _divisor(X) -> float:
    # What the kernels divide X's values by: uint8 holds pixel intensities
    return 255.0 if X.dtype == np.uint8 else 1.0


class FusedAdam:
    """Adam steps of a float32 dense softmax network, ``batch_size`` rows at a time.

    Parameters
    ----------
    network : Network
        Dense and Activation layers alternating, ending with a Dense one; a softmax head.
    optimizer : Adam
        Its hyper-parameters are used, and its moments ``m``, ``v`` and step count ``t``
        advanced, as if it had taken the steps itself.
    X : ndarray of uint8 (pixel intensities, divided by 255) or float32, (n, n_features)
    labels : ndarray of int64, (n,), class indices in [0, n_classes)
    sample_weight : ndarray of float32, (n,)
    batch_size : int
    """

    def __init__(self, network: Network, optimizer: Adam, X, labels, sample_weight,
                 batch_size: int) -> None:
        self.network, self.optimizer = network, optimizer
        self.X, self.labels, self.sample_weight = X, labels, sample_weight
        self.divisor = _divisor(X)
        self.batch_size = batch_size
        self.layers, n_acts, n_wt = dense_layer_table(network, batch_size)
        dtype = network.dtype
        self.acts, self.deltas = np.empty(n_acts, dtype), np.empty(n_acts, dtype)
        self.WT = np.empty(n_wt, dtype)
        self.row_loss = np.empty(batch_size, dtype)
        self.column_squares = np.empty(int(self.layers[:, mlp_steps.FAN_OUT].max()))

    @staticmethod
    def supports(network: Network, optimizer, X) -> bool:
        """Whether this path can train ``network`` with ``optimizer`` on ``X``."""
        return (isinstance(optimizer, Adam) and network.output == "softmax"
                and DenseForward.supports(network) and X.dtype in INPUT_DTYPES)

    def run(self, order: np.ndarray, first_row: int, n_rows: int, alpha: float) -> float:
        """Train on ``order[first_row:first_row + n_rows]``; the sum of batch losses x rows.

        The rows are split over Numba's current number of threads (``_config.threads``).
        """
        opt, net = self.optimizer, self.network
        total = mlp_steps.adam_steps(
            net.theta, net.grad, opt.m, opt.v, self.WT, self.acts, self.deltas, self.row_loss,
            self.column_squares, self.X, self.divisor, self.labels, self.sample_weight, order,
            first_row, n_rows, self.batch_size, self.layers, numba.get_num_threads(),
            opt.learning_rate_init, opt.beta_1, opt.beta_2, opt.epsilon, opt.t, float(alpha))
        opt.t += -(-n_rows // self.batch_size)
        return total


class DenseForward:
    """Class probabilities of a float32 dense network, all layers in one call.

    Rows are split over ``n_parts`` threads, and each thread takes its rows through the
    network ``BLOCK_ROWS`` at a time (a block's activations, ~130 KB for mlp-seed, stay in
    the core's L2 cache).
    """

    BLOCK_ROWS = 32

    def __init__(self, network: Network) -> None:
        self.network = network
        self._tables: dict[int, tuple[np.ndarray, int]] = {}  # block rows -> (table, size)

    @staticmethod
    def supports(network: Network) -> bool:
        """Whether ``network`` is float32 Dense and Activation layers alternating, ending
        with a Dense one: what this path (for inputs of ``INPUT_DTYPES``) and
        ``FusedAdam`` run."""
        kinds = [type(layer) for layer in network.layers]
        return (network.dtype == np.float32
                and kinds == [Dense, Activation] * (len(kinds) // 2) + [Dense])

    def predict_proba(self, X, n_parts: int) -> tuple[np.ndarray, bool]:
        """``(probabilities, whether every row was finite)`` for the rows of ``X``.

        X is uint8 (pixel intensities, divided by 255) or float32, (n, n_features). The
        second value is False when a row may hold a NaN or infinity: the caller checks X.
        """
        n = len(X)
        n_parts = max(1, min(n_parts, n))
        block = min(self.BLOCK_ROWS, -(-n // n_parts))
        if block not in self._tables:
            table, size, _ = dense_layer_table(self.network, block)
            self._tables[block] = table, size
        table, size = self._tables[block]
        dtype = self.network.dtype
        out = np.empty((n, max(2, self.network.output_shape[0])), dtype)
        kernel = mlp_forward.predict_proba
        run = kernel.serial if n_parts == 1 else kernel  # no thread to wake for one part
        n_bad = run(out, X, _divisor(X), self.network.theta, table,
                    np.empty((n_parts, size), dtype))
        return out, n_bad == 0


def dense_layer_table(network: Network, rows: int,
                      first: int = 0) -> tuple[np.ndarray, int, int]:
    """The ``mlp_steps`` layer table of the dense layers from ``network.layers[first]`` on
    (see ``_dense_stack``), activations laid out for ``rows``.

    Returns the table, the values ``acts`` needs (the input, then every layer's output,
    each ``rows`` x width) and the values the transposed weights of every layer but the
    first need.
    """
    table, in_at, wt_at = [], 0, 0
    for k, (i, code) in enumerate(_dense_stack(network.layers, first)):
        (n_in,), (n_out,) = network.layers[i].input_shape, network.layers[i].output_shape
        out_at = in_at + rows * n_in
        table.append((n_in, n_out, network.offset(i, "W"), network.offset(i, "b"), in_at,
                      out_at, wt_at, code))
        in_at = out_at
        wt_at += n_in * n_out if k > 0 else 0  # the first layer needs no W.T
    n_acts = in_at + rows * table[-1][1]
    return np.array(table, np.int64), n_acts, wt_at


def _dense_stack(layers: list, first: int) -> list[tuple[int, int]] | None:
    """(index, activation code) of each Dense layer in ``layers[first:]``, or None unless
    those are Dense layers, each with or without an Activation after it, and Dropout
    (nothing at prediction), ending with a Dense one (the logits)."""
    stack = []
    for i in range(first, len(layers)):
        layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Dense):
            stack.append((i, after.code if isinstance(after, Activation) else IDENTITY))
        elif not (isinstance(layer, Dropout) or isinstance(layer, Activation) and i > first
                  and isinstance(layers[i - 1], Dense)):
            return None
    return stack if stack and isinstance(layers[-1], Dense) else None


class ConvForward:
    """Class probabilities of a few rows through a float32 CNN, all layers in one call.

    For the rows prediction runs on the calling thread: no call, check or buffer of each
    layer from Python (one cnn-keras image, side by side: 33.6 us layer by layer, 28.2 in
    one call). The transformed filters are kept, and redone when W changes.
    """

    def __init__(self, network: Network) -> None:
        self.network = network
        convs, U_at, seen_at, in_at = [], 0, 0, 0
        for i in _conv_blocks(network):
            conv, pool = network.layers[i], network.layers[i + 2]
            (C, H, W), (F, Hp, Wp) = conv.input_shape, pool.output_shape
            out_at = in_at + C * H * W  # one row's activations (see _kernels.cnn_forward)
            convs.append((C, H, W, F, Hp, Wp, conv.pad_top, conv.pad_left,
                          network.offset(i, "W"), network.offset(i, "b"), U_at, seen_at,
                          in_at, out_at))
            U_at += winograd.filters_shape(C, F)[0]
            seen_at += conv.params["W"].size
            in_at = out_at
        self.convs = np.array(convs, np.int64)
        self.denses, _, _ = dense_layer_table(network, 1, 3 * len(convs) + 1)
        self.U = np.empty(U_at, network.dtype)
        self.seen = np.full(seen_at, np.nan, network.dtype)  # equal to no W: computes U

    @staticmethod
    def supports(network: Network) -> bool:
        """Whether ``network`` is float32 3x3 convolution blocks (stride 1, ReLU, 2x2 max
        pool), flattened, then dense layers (see ``_dense_stack``) and a softmax."""
        after = 3 * len(_conv_blocks(network))
        return (network.dtype == np.float32 and network.output == "softmax" and after > 0
                and after < len(network.layers) and isinstance(network.layers[after], Flatten)
                and _dense_stack(network.layers, after + 1) is not None)

    def predict_proba(self, X, threads: int) -> tuple[np.ndarray, bool]:
        """``(probabilities, whether every value was finite)`` for the rows of ``X``, uint8
        (pixel intensities, divided by 255) or float32, (n, n_features).

        The convolutions share ``threads`` threads (at most Numba's pool), even one
        image's: Numba's setting for this call alone. (Inside ``serial_kernels``, as it
        was called before, one image took ~1 us longer: this call has no other kernel to
        make serial.)"""
        out = np.empty((len(X), self.network.output_shape[0]), self.network.dtype)
        with numba_threads(threads):
            n_bad = cnn_forward.predict_proba(out, X, _divisor(X), self.network.theta,
                                              self.convs, self.denses, self.U, self.seen,
                                              threads)
        return out, n_bad == 0


def _conv_blocks(network: Network) -> list[int]:
    """Where each convolution block at the start of ``network`` starts: a 3x3 convolution
    of stride 1, a ReLU and a 2x2 max pool, which Winograd's kernels run."""
    blocks = []
    while (network._conv_relu_pool_at(i := 3 * len(blocks))
           and network.layers[i]._winograd_fits()):
        blocks.append(i)
    return blocks
