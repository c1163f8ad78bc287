"""The MLP's fast training path: many Adam steps per compiled call.

``FusedAdam`` lays a network of dense layers out for ``_kernels.mlp_steps.adam_steps`` and
runs an epoch through it a chunk of batches at a time. The arithmetic is the layer-by-layer
path's (the same loss, gradients, L2 term and Adam update), in a different order of
multiply-adds, so the weights agree to float32 rounding rather than bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from ._kernels import mlp_steps
from ._kernels.activation import IDENTITY
from ._layers import Activation, Dense
from ._network import Network
from ._optim import Adam

# Batches per compiled call: long enough that the call's own cost (~20 us) vanishes, short
# enough for a lively progress bar and a prompt KeyboardInterrupt.
CHUNK_BATCHES = 64


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
        self.divisor = 255.0 if X.dtype == np.uint8 else 1.0
        self.batch_size = batch_size
        denses, activations = network.layers[0::2], network.layers[1::2]
        # The gathered input at offset 0 of acts, each layer's output after its input.
        rows, in_at, wt_at = [], 0, 0
        for k, dense in enumerate(denses):
            (n_in,), (n_out,) = dense.input_shape, dense.output_shape
            out_at = in_at + batch_size * n_in
            code = activations[k].code if k < len(activations) else IDENTITY  # logits
            rows.append((n_in, n_out, network.offset(2 * k, "W"), network.offset(2 * k, "b"),
                         in_at, out_at, wt_at, code))
            in_at = out_at
            wt_at += n_in * n_out if k > 0 else 0  # the first layer needs no W.T
        out_at = in_at + batch_size * denses[-1].output_shape[0]
        self.layers = np.array(rows, np.int64)
        dtype = network.dtype
        self.acts, self.deltas = np.empty(out_at, dtype), np.empty(out_at, dtype)
        self.WT = np.empty(wt_at, dtype)
        self.row_loss = np.empty(batch_size, dtype)
        self.column_squares = np.empty(int(self.layers[:, mlp_steps.FAN_OUT].max()))

    @staticmethod
    def supports(network: Network, optimizer, X) -> bool:
        """Whether this path can train ``network`` with ``optimizer`` on ``X``."""
        kinds = [type(layer) for layer in network.layers]
        return (isinstance(optimizer, Adam) and network.output == "softmax"
                and network.dtype == np.float32 and X.dtype in (np.uint8, np.float32)
                and kinds == [Dense, Activation] * (len(kinds) // 2) + [Dense])

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
