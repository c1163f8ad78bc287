"""Optimizer steps over the one flat parameter buffer, as scikit-learn's MLP takes them.

The arithmetic is that of ``sklearn/neural_network/_stochastic_optimizers.py``:

- ``sgd_step``: ``velocity = momentum * velocity - lr * g``, then ``theta += momentum *
  velocity - lr * g`` with Nesterov's momentum, else ``theta += velocity``.
- ``adam_step``: ``m = beta1 * m + (1 - beta1) * g``, ``v = beta2 * v + (1 - beta2) * g**2``,
  ``theta -= lr_t * m / (sqrt(v) + eps)`` with ``lr_t = lr * sqrt(1 - beta2**t) / (1 -
  beta1**t)``; ``t`` counts steps from 1 and the caller increments it.

``g`` is ``grad + l2 * theta`` for the first ``n_decay`` elements and ``grad`` after them:
the caller lays the weights out first and the biases after, and passes ``l2 = alpha /
n_samples`` as scikit-learn does. ``grad`` is not modified.

Scalars are Python floats (``nesterov`` a bool, ``t`` and ``n_decay`` ints) and are rounded
to the buffers' dtype, as NumPy does when scikit-learn multiplies a float32 array by a float.

The loops use only scalars that arrive as arguments, never ones derived in the kernel: the
serial twin compiles the set-up and the loop as one function, and fast-math is free to fold
their relations into the loop (``beta * m + (1 - beta) * g`` into a different rounding,
``lr_t``'s bias correction into the divisor; it did while ``_config`` allowed ``reassoc``),
while the parallel loop receives them as opaque values, so the twins would round
differently. Hence ``adam_step`` computes ``lr_t``
and ``1 - beta`` in Python and ``_adam_update`` takes them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import inlined_kernel, parallel_kernel


@parallel_kernel
def sgd_step(theta, velocity, grad, lr, momentum, nesterov, l2, n_decay):
    # theta (P,), velocity (P,) updated in place; grad (P,)
    real = theta.dtype.type
    rate, mu, decay = real(lr), real(momentum), real(l2)
    # Every element is updated on its own: each thread owns a range of the buffer.
    for i in prange(theta.shape[0]):
        g = (grad[i] + decay * theta[i]) if i < n_decay else grad[i]
        v = mu * velocity[i] - rate * g
        velocity[i] = v
        theta[i] += (mu * v - rate * g) if nesterov else v


@parallel_kernel
def _adam_update(theta, m, v, grad, lr_t, c1, c2, eps, l2, n_decay):
    # theta (P,), m (P,), v (P,) updated in place; grad (P,)
    real = theta.dtype.type
    rate, a1, a2, tiny, decay = real(lr_t), real(c1), real(c2), real(eps), real(l2)
    # Every element is updated on its own: each thread owns a range of the buffer.
    for i in prange(theta.shape[0]):
        g = (grad[i] + decay * theta[i]) if i < n_decay else grad[i]
        adam_element(theta, m, v, i, g, rate, a1, a2, tiny)


@inlined_kernel
def adam_range(theta, m, v, grad, rate, a1, a2, tiny, decay):
    # Adam over whole arrays (slices of the flat buffers), g = grad + decay * theta; decay 0
    # gives g = grad exactly for finite theta. The loop starts at 0: from an offset known
    # only at run time, Numba guards each index against wrapping around and LLVM no longer
    # vectorises the loop (measured 10x slower).
    for i in range(theta.size):
        adam_element(theta, m, v, i, grad[i] + decay * theta[i], rate, a1, a2, tiny)


@inlined_kernel
def adam_element(theta, m, v, i, g, rate, a1, a2, tiny):
    # Element i of Adam's update with gradient g (L2 term included); scalars in theta's dtype.
    # beta * m + (1 - beta) * g, written as m + (1 - beta) * (g - m)
    m_i = m[i] + a1 * (g - m[i])
    v_i = v[i] + a2 * (g * g - v[i])
    m[i] = m_i
    v[i] = v_i
    theta[i] -= rate * m_i / (np.sqrt(v_i) + tiny)


def adam_step(theta: np.ndarray, m: np.ndarray, v: np.ndarray, grad: np.ndarray, lr: float,
              beta1: float, beta2: float, eps: float, t: int, l2: float, n_decay: int) -> None:
    """One Adam step at step ``t`` (from 1) on ``theta``, ``m`` and ``v`` in place."""
    lr_t = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
    _adam_update(theta, m, v, grad, lr_t, 1.0 - beta1, 1.0 - beta2, eps, l2, n_decay)


def _warmup(dtype) -> None:
    theta, grad = np.ones(4, dtype), np.ones(4, dtype)
    sgd_step(theta, np.zeros_like(theta), grad, 0.1, 0.9, True, 1e-4, 2)
    adam_step(theta, np.zeros_like(theta), np.zeros_like(theta), grad, 1e-3, 0.9, 0.999, 1e-8,
              1, 1e-4, 2)
