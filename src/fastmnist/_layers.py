"""Layers: shapes, parameter specs and the kernel calls of one step of the network.

A layer knows the shape of one sample going in and coming out, the parameters it owns and
how they are initialised, and which kernels run its forward and backward passes. It owns
no memory: the ``Network`` hands it views into the flat parameter and gradient buffers
(``bind``) and a workspace of buffers sized for a batch (``allocate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._kernels import activation as act
from ._kernels import dense as dense_kernels
from ._kernels import dropout as dropout_kernels


@dataclass
class ParamSpec:
    """One parameter array: its shape, whether L2 decays it, and its init bound."""

    name: str
    shape: tuple[int, ...]
    decay: bool
    init_bound: float


# Per-batch references a layer keeps between its forward and backward passes, and its
# views into the network's buffers: none of them belongs in a pickle.
_TRANSIENT = {"params", "grads", "x", "y", "mask", "active"}


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

    def allocate(self, batch_size: int, dtype) -> dict[str, np.ndarray]:
        """The buffers one batch needs: the output ``y``, the input gradient ``dx``."""
        return {
            "y": np.empty((batch_size, *self.output_shape), dtype),
            "dx": np.empty((batch_size, *self.input_shape), dtype),
        }

    def forward(self, ws: dict, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, ws: dict, dy: np.ndarray, need_dx: bool) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(repr=False)
class Dense(Layer):
    """Fully connected: ``y = x W + b``, W of shape (in, out) as in scikit-learn."""

    units: int
    init_factor: float = 6.0  # Glorot uniform: bound sqrt(factor / (fan_in + fan_out))

    def build(self, input_shape):
        (fan_in,) = input_shape
        self.input_shape, self.output_shape = input_shape, (self.units,)
        self.bound = float(np.sqrt(self.init_factor / (fan_in + self.units)))
        return self.output_shape

    def param_specs(self):
        return [ParamSpec("W", (self.input_shape[0], self.units), True, self.bound),
                ParamSpec("b", (self.units,), False, self.bound)]

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

    def allocate(self, batch_size, dtype):
        return {}  # forward and backward both work in place

    def forward(self, ws, x, training):
        act.activation_forward(x, x, self.code)
        self.y = x
        return x

    def backward(self, ws, dy, need_dx):
        act.activation_backward(dy, dy, self.y, self.code)
        return dy

    def __repr__(self):
        return f"Activation({self.name!r})"


@dataclass(repr=False)
class Dropout(Layer):
    """Inverted dropout; the mask is a hash of (seed, step, element), not of the threads."""

    rate: float
    seed: int = 0
    step: int = field(default=0, init=False)

    def allocate(self, batch_size, dtype):
        return {"y": np.empty((batch_size, *self.output_shape), dtype),
                "mask": np.empty((batch_size, *self.output_shape), np.uint8)}

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

    def allocate(self, batch_size, dtype):
        return {}

    def forward(self, ws, x, training):
        return x.reshape(len(x), -1)

    def backward(self, ws, dy, need_dx):
        return dy.reshape(len(dy), *self.input_shape)
