"""Network: a list of layers over one flat parameter buffer, and a loss on top.

All parameters live in one flat array ``theta`` (and the gradients in ``grad``, laid out
the same way), so an optimizer step is one kernel call over the whole model. Weights come
first and biases after them: L2 decay (scikit-learn's ``alpha``) then applies to the
leading ``n_decay`` values. Each layer sees views into these buffers.

Buffers for a batch (activations, caches, gradients) are allocated once per batch size
and reused; the final, smaller batch of an epoch uses the leading rows of the same ones.
"""

from __future__ import annotations

import mmap

import numpy as np

from ._kernels import loss as loss_kernels
from ._layers import Activation, BatchNorm2D, ChannelsFirst, Conv2D, Layer, MaxPool2D

_LOSSES = {
    "softmax": loss_kernels.softmax_cross_entropy,
    "logistic": loss_kernels.logistic_cross_entropy,
}


class Network:
    """Layers, their parameters and a softmax or logistic cross-entropy head.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple of int
        The shape of one sample, e.g. ``(784,)`` or ``(1, 28, 28)``.
    output : {"softmax", "logistic"}
        Softmax over the last layer's units, or one logistic unit (binary problems).
    dtype : float32 or float64
    """

    def __init__(self, layers: list[Layer], input_shape: tuple[int, ...], output: str,
                 dtype=np.float32) -> None:
        self.layers, self.input_shape, self.output = layers, tuple(input_shape), output
        self.dtype = np.dtype(dtype)
        shape = self.input_shape
        for layer in layers:
            shape = layer.build(shape)
        self.output_shape = shape
        specs = [(i, spec) for i, layer in enumerate(layers) for spec in layer.param_specs()]
        # Weights first, then biases: decay applies to theta[:n_decay].
        ordered = [s for s in specs if s[1].decay] + [s for s in specs if not s[1].decay]
        self._specs = specs
        self._offsets = {}  # (layer index, parameter name) -> offset into theta
        offset = 0
        for i, spec in ordered:
            self._offsets[i, spec.name] = offset
            offset += int(np.prod(spec.shape))
        self.n_decay = sum(int(np.prod(spec.shape)) for _, spec in ordered if spec.decay)
        self.theta = np.zeros(offset, self.dtype)
        self.grad = np.zeros(offset, self.dtype)
        self._bind_layers()
        self._capacity = 0
        # Bytes of batch buffers per row, for how many rows a memory budget allows; taken
        # at 64 rows, where the convolutions' scratch is shared out as in use. An upper
        # bound: it counts buffers a path may leave untouched (a fused convolution's y).
        # (np.empty does not touch the pages: this costs no memory.)
        self.bytes_per_row = sum(buffer.nbytes for layer in layers
                                 for buffer in layer.allocate(64, self.dtype).values()) // 64

    def __getstate__(self):
        # Workspaces are rebuilt on demand; layer views are re-made from theta and grad.
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_workspaces", "_dlogits", "_row_loss")}
        state["_capacity"] = 0
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._bind_layers()

    def _bind_layers(self):
        for i, layer in enumerate(self.layers):
            layer.bind(self._layer_views(i, self.theta), self._layer_views(i, self.grad))

    def _layer_views(self, i, buffer):
        views = {}
        for spec in self.layers[i].param_specs():
            offset = self._offsets[i, spec.name]
            views[spec.name] = buffer[offset:offset + int(np.prod(spec.shape))].reshape(
                spec.shape)
        return views

    def offset(self, layer_index: int, name: str) -> int:
        """Where parameter ``name`` of ``layers[layer_index]`` starts in ``theta``."""
        return self._offsets[layer_index, name]

    @property
    def capacity(self) -> int:
        """Rows the batch buffers hold now: 0 until the first pass."""
        return self._capacity

    @property
    def n_params(self) -> int:
        return self.theta.size

    def initialize(self, random_state: np.random.RandomState) -> None:
        """Uniform weights and biases within each spec's bound, drawn in scikit-learn's order.

        scikit-learn draws, layer by layer, the weights then the biases from
        ``uniform(-bound, bound)``; drawing the same way gives the same initial model
        as scikit-learn's MLPClassifier for the same ``random_state``.
        """
        for i, spec in self._specs:
            offset = self._offsets[i, spec.name]
            size = int(np.prod(spec.shape))
            if spec.fill is not None:  # e.g. batch-norm's scale 1 and shift 0: no draw
                self.theta[offset:offset + size] = spec.fill
            else:
                values = random_state.uniform(-spec.init_bound, spec.init_bound, spec.shape)
                self.theta[offset:offset + size] = values.ravel()

    # --- passes ---------------------------------------------------------------------------

    def _reserve(self, batch_size: int) -> None:
        if batch_size <= self._capacity:
            return
        self._workspaces = [layer.allocate(batch_size, self.dtype, _mapped_empty)
                            for layer in self.layers]
        self._dlogits = np.empty((batch_size, *self.output_shape), self.dtype)
        self._row_loss = np.empty(batch_size, self.dtype)
        self._capacity = batch_size

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The logits for a batch ``x`` (n, *input_shape); a view into reused memory."""
        self._reserve(len(x))
        i = 0
        while i < len(self.layers):
            layer, ws = self.layers[i], self._workspaces[i]
            if self._conv_relu_pool_at(i):  # one kernel for the three
                x = layer.forward_relu_pool(ws, x, self._workspaces[i + 2]["y"][: len(x)],
                                            training)
                i += 3
            elif self._activation_follows_conv(i):  # one kernel for both
                activation = self.layers[i + 1]
                x = layer.forward(ws, x, training, activation.code)
                activation.applied(x)
                i += 2
            else:
                x = layer.forward(ws, x, training)
                i += 1
        return x

    def loss_and_gradient(self, x: np.ndarray, labels: np.ndarray,
                          weights: np.ndarray) -> float:
        """Forward, loss and backward for one batch; fills ``grad`` and returns the loss.

        The loss is the weighted mean ``sum(w * loss) / sum(w)`` without any L2 term; the
        caller adds L2 to the loss and, through the optimizer, to the gradient.
        """
        logits = self.forward(x, training=True)
        n = len(x)
        delta = self._dlogits[:n]
        # Looked up by name, not stored: kernels are not picklable, networks must be.
        value = _LOSSES[self.output](delta, self._row_loss[:n], logits, labels, weights)
        i = len(self.layers) - 1
        while i >= 0:
            layer = self.layers[i]
            if self._conv_relu_pool_at(i - 2):  # the three in one kernel
                delta = self.layers[i - 2].backward_relu_pool(self._workspaces[i - 2], delta,
                                                              need_dx=i > 2)
                i -= 3
            elif self._follows_relu(i):  # one pass for the pool and the ReLU before it
                delta = layer.backward_through_relu(self._workspaces[i], delta,
                                                    overwrite_x=self._output_unread(i - 2))
                i -= 2
            else:
                delta = layer.backward(self._workspaces[i], delta, need_dx=i > 0)
                i -= 1
        return value

    def _conv_relu_pool_at(self, i: int) -> bool:
        # Whether layers[i:i + 3] are a convolution, a ReLU and a 2x2 max pool of stride 2,
        # which kernels.conv_pool runs as one: the convolution's output is never in memory
        # (cnn-keras, batch 128: 15 MB; a warm 1-epoch fit 4.4 -> 4.0 s).
        layers = self.layers
        return (0 <= i and i + 2 < len(layers) and isinstance(layers[i], Conv2D)
                and isinstance(layers[i + 1], Activation) and layers[i + 1].name == "relu"
                and isinstance(layers[i + 2], MaxPool2D) and layers[i + 2].pool == 2
                and layers[i + 2].step == 2)

    def _activation_follows_conv(self, i: int) -> bool:
        # Whether layers[i] is a convolution and layers[i + 1] an activation
        return (i + 1 < len(self.layers) and isinstance(self.layers[i], Conv2D)
                and isinstance(self.layers[i + 1], Activation))

    def _output_unread(self, i: int) -> bool:
        # Whether no backward pass reads layers[i]'s output (which a ReLU after it holds in
        # place), so that the pool after that ReLU may write its gradient over it. Not the
        # network's input (L-BFGS passes the same batch again), nor the output of a layer
        # whose backward pass reads it (a pool, an activation) or passes its input on.
        return i >= 0 and isinstance(self.layers[i], (Conv2D, BatchNorm2D, ChannelsFirst))

    def _follows_relu(self, i: int) -> bool:
        # Whether layers[i] is max pooling right after a ReLU
        return (i > 0 and isinstance(self.layers[i], MaxPool2D)
                and isinstance(self.layers[i - 1], Activation)
                and self.layers[i - 1].name == "relu")

    def predict_proba(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch into ``out`` (n, n_classes)."""
        logits = self.forward(x, training=False)
        if self.output == "softmax":
            loss_kernels.softmax(out, logits)
        else:
            out[:, 1] = 1 / (1 + np.exp(-logits[:, 0]))
            out[:, 0] = 1 - out[:, 1]
        return out

    def __repr__(self) -> str:
        lines = [f"  {layer!r}," for layer in self.layers]
        return "Network(\n" + "\n".join(lines) + f"\n  -> {self.output}\n)"


def _mapped_empty(shape, dtype) -> np.ndarray:
    """``np.empty`` in a private memory map of its own, given back to the system when freed.

    Not malloc's: glibc memory-maps a block this size only until the first is freed, then
    raises its threshold to that size. A model's batch buffers freed, the next fit's came
    from the heap, which kept them in the process's memory after they were freed (cnn-keras:
    10 MB more peak RSS from the second fit in a process on). Pages not written cost nothing.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes == 0 or not hasattr(mmap, "MAP_PRIVATE"):  # (Windows has no MAP_PRIVATE)
        return np.empty(shape, dtype)
    # Private: a forked child (joblib) writing its copy leaves the parent's alone.
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dtype).reshape(shape)
