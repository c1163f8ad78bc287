"""Layers: shapes, parameter specs and the kernel calls of one step of the network.

A layer knows the shape of one sample going in and coming out, the parameters it owns and
how they are initialised, and which kernels run its forward and backward passes. It owns
no memory: the ``Network`` hands it views into the flat parameter and gradient buffers
(``bind``) and a workspace of buffers sized for a batch (``allocate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ._kernels import activation as act
from ._kernels import conv as conv_kernels
from ._kernels import conv_pool as conv_pool_kernels
from ._kernels import dense as dense_kernels
from ._kernels import dropout as dropout_kernels
from ._kernels import norm as norm_kernels
from ._kernels import pool as pool_kernels
from ._kernels import winograd as winograd_kernels


@dataclass
class ParamSpec:
    """One parameter array: its shape, whether L2 decays it, and how it starts.

    It starts uniform in ``[-init_bound, init_bound]``, or at the constant ``fill``.
    """

    name: str
    shape: tuple[int, ...]
    decay: bool
    init_bound: float = 0.0
    fill: float | None = None


def _init_bound(fan_in: int, fan_out: int, factor: float, he: bool) -> float:
    """Half-width of the uniform initial weights: Glorot's, or He's with ``he``.

    Glorot's bound sqrt(factor / (fan_in + fan_out)) keeps the variance of linear and
    tanh units (factor 6; scikit-learn uses 2 for logistic units). He's sqrt(6 / fan_in)
    doubles the variance for ReLU units, which zero half their inputs (He et al., 2015).
    """
    return float(np.sqrt(6.0 / fan_in if he else factor / (fan_in + fan_out)))


# Per-batch references a layer keeps between its forward and backward passes, and its
# views into the network's buffers: none of them belongs in a pickle.
_TRANSIENT = {"params", "grads", "x", "y", "mask", "active", "x_hat"}


class Layer:
    """Base class. Subclasses set ``output_shape`` in ``build`` and run kernels."""

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}

    def build(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.input_shape = self.output_shape = input_shape
        return self.output_shape

    def param_specs(self) -> list[ParamSpec]:
        return []

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.params, self.grads = params, grads

    def allocate(self, batch_size: int, dtype, empty=np.empty) -> dict[str, np.ndarray]:
        """The buffers one batch needs: the output ``y``, the input gradient ``dx``.

        ``empty(shape, dtype)`` makes each buffer (``Network`` passes its own).
        """
        return {
            "y": empty((batch_size, *self.output_shape), dtype),
            "dx": empty((batch_size, *self.input_shape), dtype),
        }

    def forward(self, ws: dict, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, ws: dict, dy: np.ndarray, need_dx: bool) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(repr=False)
class Dense(Layer):
    """Fully connected: ``y = x W + b``, W of shape (in, out) as in scikit-learn.

    Weights start Glorot-uniform, bound sqrt(init_factor / (fan_in + fan_out)), or
    He-uniform with ``he``; biases from the same distribution as scikit-learn draws them, or
    at zero as Keras starts them.
    """

    units: int
    init_factor: float = 6.0
    zero_bias: bool = False
    he: bool = False

    def build(self, input_shape):
        (fan_in,) = input_shape
        self.input_shape, self.output_shape = input_shape, (self.units,)
        self.bound = _init_bound(fan_in, self.units, self.init_factor, self.he)
        return self.output_shape

    def param_specs(self):
        return [ParamSpec("W", (self.input_shape[0], self.units), True, self.bound),
                ParamSpec("b", (self.units,), False, self.bound,
                          fill=0.0 if self.zero_bias else None)]

    def forward(self, ws, x, training):
        self.x = x
        y = ws["y"][: len(x)]
        dense_kernels.dense_forward(y, x, self.params["W"], self.params["b"])
        return y

    def backward(self, ws, dy, need_dx):
        dx = ws["dx"][: len(dy)]
        dense_kernels.dense_backward(dx, self.grads["W"], self.grads["b"], dy, self.x,
                                     self.params["W"], need_dx)
        return dx

    def __repr__(self):
        return f"Dense({self.input_shape[0]} -> {self.units})"


@dataclass(repr=False)
class Activation(Layer):
    """Element-wise identity, logistic, tanh or relu, in place on the previous output."""

    name: str

    def __post_init__(self):
        self.code = act.ACTIVATIONS[self.name]

    def allocate(self, batch_size, dtype, empty=np.empty):
        return {}  # forward and backward both work in place

    def forward(self, ws, x, training):
        flat = x.reshape(len(x), -1)  # the kernels see (batch, values): images too
        act.activation_forward(flat, flat, self.code)
        self.applied(x)
        return x

    def applied(self, y):
        """Record y as this layer's output, computed by the layer before it (Network.forward
        fuses a convolution and its activation): the backward pass needs it."""
        self.y = y.reshape(len(y), -1)

    def backward(self, ws, dy, need_dx):
        flat = dy.reshape(len(dy), -1)
        act.activation_backward(flat, flat, self.y, self.code)
        return dy

    def __repr__(self):
        return f"Activation({self.name!r})"


@dataclass(repr=False)
class Dropout(Layer):
    """Inverted dropout; the mask is a hash of (seed, step, element), not of the threads."""

    rate: float
    seed: int = 0
    step: int = field(default=0, init=False)

    def allocate(self, batch_size, dtype, empty=np.empty):
        return {"y": empty((batch_size, *self.output_shape), dtype),
                "mask": empty((batch_size, *self.output_shape), np.uint8)}

    def forward(self, ws, x, training):
        if not training or self.rate == 0:
            self.active = False
            return x
        self.active = True
        self.step += 1
        y, mask = ws["y"][: len(x)], ws["mask"][: len(x)]
        dropout_kernels.dropout_forward(y, mask, x, self.rate, self.seed, self.step)
        self.mask = mask
        return y

    def backward(self, ws, dy, need_dx):
        if self.active:
            dropout_kernels.dropout_backward(dy, self.mask, dy, self.rate)
        return dy

    def __repr__(self):
        return f"Dropout({self.rate})"


class Flatten(Layer):
    """(C, H, W) -> (C*H*W,), channel-major as PyTorch flattens: a reshape, no copy."""

    def build(self, input_shape):
        self.input_shape, self.output_shape = input_shape, (int(np.prod(input_shape)),)
        return self.output_shape

    def allocate(self, batch_size, dtype, empty=np.empty):
        return {}

    def forward(self, ws, x, training):
        return x.reshape(len(x), -1)

    def backward(self, ws, dy, need_dx):
        return dy.reshape(len(dy), *self.input_shape)


@dataclass(repr=False)
class Conv2D(Layer):
    """2-D convolution of (C, H, W) images; weights (F, C, K, K) as PyTorch lays them out."""

    filters: int
    kernel_size: int
    stride: int = 1
    padding: str = "valid"
    he: bool = False

    def build(self, input_shape):
        C, H, W = input_shape
        K = self.kernel_size
        H_out, W_out, self.pad_top, self.pad_left = conv_kernels.conv_output_shape(
            H, W, K, self.stride, self.padding)
        self.input_shape, self.output_shape = input_shape, (self.filters, H_out, W_out)
        # Fans over receptive fields, as Keras and PyTorch count them.
        self.bound = _init_bound(C * K * K, self.filters * K * K, 6.0, self.he)
        return self.output_shape

    def param_specs(self):
        C, K = self.input_shape[0], self.kernel_size
        # Biases start at zero, as Keras's reference model starts them.
        return [ParamSpec("W", (self.filters, C, K, K), True, self.bound),
                ParamSpec("b", (self.filters,), False, fill=0.0)]

    def allocate(self, batch_size, dtype, empty=np.empty):
        C, K = self.input_shape[0], self.kernel_size
        _, H_out, W_out = self.output_shape
        # The fused kernels compute only the pixels a window covers, so their products may
        # take more images at once: work enough for either.
        sizes = (batch_size, C, self.filters, K, self.stride, H_out, W_out)
        work = max(conv_kernels.conv2d_workspace_shape(*sizes),
                   conv_pool_kernels.conv2d_relu_pool_workspace_shape(*sizes))
        pooled = (batch_size, self.filters, H_out // 2, W_out // 2)
        # "codes" serve forward_relu_pool alone: untouched, a buffer takes no memory.
        ws = {**super().allocate(batch_size, dtype, empty), "work": empty(work, dtype),
              "codes": empty(pooled, dtype)}
        if self._winograd_fits():  # prediction's transformed filters, and the W they are of
            ws["winograd"] = empty(winograd_kernels.filters_shape(C, self.filters), dtype)
            ws["winograd_of"] = empty((self.filters, C, K, K), dtype)
            ws["winograd_of"][:] = np.nan  # equal to no W: the first call transforms
        return ws

    def _winograd_fits(self) -> bool:
        return self.kernel_size == 3 and self.stride == 1

    def forward(self, ws, x, training, activation=act.IDENTITY):
        """y = activation(conv(x)); an activation code of kernels.activation, applied in
        the same kernel (see Network.forward)."""
        self.x = x
        y = ws["y"][: len(x)]
        conv_kernels.conv2d_forward(y, ws["work"], x, self.params["W"], self.params["b"],
                                    self.stride, self.pad_top, self.pad_left, activation)
        return y

    def backward(self, ws, dy, need_dx):
        dx = ws["dx"][: len(dy)]
        conv_kernels.conv2d_backward(dx, self.grads["W"], self.grads["b"], ws["work"], self.x,
                                     dy, self.params["W"], self.stride, self.pad_top,
                                     self.pad_left, need_dx)
        return dx

    def forward_relu_pool(self, ws, x, y, training):
        """ReLU(conv(x)) max-pooled 2x2 (stride 2) into y, in one kernel (kernels.conv_pool);
        when training, for ``backward_relu_pool``. Prediction with 3x3 filters of stride 1
        goes through kernels.winograd: 2.25x fewer multiply-adds."""
        self.x = x
        _, H_out, W_out = self.output_shape
        if not training and self._winograd_fits():
            U, W = ws["winograd"], self.params["W"]
            winograd_kernels.transform_filters(U, ws["winograd_of"], W)  # if W changed
            winograd_kernels.conv2d_relu_pool_winograd(
                y, x, U, self.params["b"], self.pad_top, self.pad_left, numba.get_num_threads())
            return y
        conv_pool_kernels.conv2d_relu_pool_forward(
            y, ws["codes"][: len(x)], ws["work"], x, self.params["W"], self.params["b"],
            self.stride, self.pad_top, self.pad_left, H_out, W_out, training)
        return y

    def backward_relu_pool(self, ws, dy, need_dx):
        """dx (and the gradients of W and b) from the gradient of ``forward_relu_pool``'s
        output."""
        dx = ws["dx"][: len(dy)]
        _, H_out, W_out = self.output_shape
        conv_pool_kernels.conv2d_relu_pool_backward(
            dx, self.grads["W"], self.grads["b"], ws["work"], self.x, dy,
            ws["codes"][: len(dy)], self.params["W"], self.stride, self.pad_top,
            self.pad_left, H_out, W_out, need_dx)
        return dx

    def __repr__(self):
        C = self.input_shape[0]
        return (f"Conv2D({C} -> {self.filters}, {self.kernel_size}x{self.kernel_size}, "
                f"stride {self.stride}, {self.padding})")


@dataclass(repr=False)
class MaxPool2D(Layer):
    """Max pooling over pool x pool windows (stride = pool unless given), no padding."""

    pool: int
    stride: int | None = None

    @property
    def step(self) -> int:
        """The stride in effect: ``stride``, or ``pool`` when that is None."""
        return self.stride or self.pool

    def build(self, input_shape):
        C, H, W = input_shape
        self.input_shape = input_shape
        self.output_shape = (C, (H - self.pool) // self.step + 1,
                             (W - self.pool) // self.step + 1)
        return self.output_shape

    def forward(self, ws, x, training):
        # The backward pass finds each window's maximum again in x: no index is kept.
        self.x = x
        y = ws["y"][: len(x)]
        pool_kernels.maxpool2d_forward(y, x, self.pool, self.step)
        return y

    def backward_through_relu(self, ws, dy, overwrite_x=False):
        """This layer's backward pass, then that of the ReLU just before it, in one kernel.

        With ``overwrite_x`` (the caller knows no backward pass reads the ReLU's output
        after this one), and windows that do not overlap, the gradient is written over the
        ReLU's output (this layer's input): the layer's own dx buffer is then never touched
        and takes no memory (cnn-keras, batch 128: 14 MB).
        """
        in_place = overwrite_x and self.step >= self.pool
        dx = self.x if in_place else ws["dx"][: len(dy)]
        return self._backward(dx, ws, dy, relu_gate=True)

    def backward(self, ws, dy, need_dx):
        return self._backward(ws["dx"][: len(dy)], ws, dy, relu_gate=False)

    def _backward(self, dx, ws, dy, relu_gate):
        pool_kernels.maxpool2d_backward(dx, dy, self.x, ws["y"][: len(dy)], self.pool,
                                        self.step, relu_gate)
        return dx

    def __repr__(self):
        return f"MaxPool2D({self.pool})"


@dataclass(repr=False)
class BatchNorm2D(Layer):
    """Batch normalisation over channels; running statistics for prediction."""

    momentum: float = 0.1
    eps: float = 1e-5

    def build(self, input_shape):
        super().build(input_shape)
        C = input_shape[0]
        self.running_mean, self.running_var = np.zeros(C), np.ones(C)
        return self.output_shape

    def param_specs(self):
        C = self.input_shape[0]
        return [ParamSpec("gamma", (C,), False, fill=1.0), ParamSpec("beta", (C,), False,
                                                                       fill=0.0)]

    def allocate(self, batch_size, dtype, empty=np.empty):
        C = self.input_shape[0]
        self.running_mean = self.running_mean.astype(dtype)
        self.running_var = self.running_var.astype(dtype)
        return {**super().allocate(batch_size, dtype, empty),
                "x_hat": empty((batch_size, *self.input_shape), dtype),
                "inv_std": empty(C, dtype)}

    def forward(self, ws, x, training):
        y = ws["y"][: len(x)]
        gamma, beta = self.params["gamma"], self.params["beta"]
        if training:
            self.x_hat = ws["x_hat"][: len(x)]
            norm_kernels.batchnorm2d_forward_train(
                y, self.running_mean, self.running_var, self.x_hat, ws["inv_std"], x, gamma,
                beta, self.momentum, self.eps)
        else:
            norm_kernels.batchnorm2d_forward_eval(y, x, gamma, beta, self.running_mean,
                                                  self.running_var, self.eps)
        return y

    def backward(self, ws, dy, need_dx):
        dx = ws["dx"][: len(dy)]
        norm_kernels.batchnorm2d_backward(dx, self.grads["gamma"], self.grads["beta"],
                                          self.x_hat, ws["inv_std"], dy, self.params["gamma"])
        return dx

    def __repr__(self):
        return f"BatchNorm2D({self.input_shape[0]})"


class ChannelsFirst(Layer):
    """(H, W, C) rows, as images are stored, to the (C, H, W) layout the kernels use."""

    def build(self, input_shape):
        H, W, C = input_shape
        self.input_shape, self.output_shape = input_shape, (C, H, W)
        return self.output_shape

    def forward(self, ws, x, training):
        y = ws["y"][: len(x)]
        np.copyto(y, x.transpose(0, 3, 1, 2))
        return y

    def backward(self, ws, dy, need_dx):
        dx = ws["dx"][: len(dy)]
        np.copyto(dx, dy.transpose(0, 2, 3, 1))
        return dx
