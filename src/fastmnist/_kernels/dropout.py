"""Inverted dropout with a counter-based random number generator.

Element ``i`` of the step-``step`` mask is kept when ``u(seed, step, i) >= rate``, where
``u`` is a pure function of its three arguments: ``key = mix(mix(seed) ^ step)``, then
``u = (mix(key + (i + 1) * GOLDEN) >> 11) * 2**-53``, with ``mix`` SplitMix64's finaliser and
``GOLDEN`` its increment (the 64-bit golden ratio); ``u`` is the ``i``-th output of SplitMix64
started at ``key``. No generator state is carried from element to element, so the mask is
the same for any thread count and any order of evaluation, and the backward pass could
recompute it instead of reading the cache.

Kept elements are scaled by ``1 / (1 - rate)``, so the expected output equals the input and
inference needs no rescaling. Dropped elements are multiplied by zero, not overwritten, so a
NaN in the input still shows in the output.

``dropout_forward`` and ``dropout_backward`` check their arguments, compute ``1 / (1 - rate)``
and call the kernels on flat views of C-contiguous arrays of any shape. (A scale derived inside
a kernel would let fast-math rewrite ``x * scale`` as ``x / (1 - rate)`` in the serial twin
only, which sees both; the twins would then round differently.)
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel, parallel_kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11))
_TWO_TO_MINUS_53 = 2.0**-53


@kernel
def _mix64(z):
    # SplitMix64's finaliser (Stafford's "Mix13"): a bijection of uint64 with full avalanche.
    z = (z ^ (z >> _SHIFTS[0])) * _MIX_1
    z = (z ^ (z >> _SHIFTS[1])) * _MIX_2
    return z ^ (z >> _SHIFTS[2])


@parallel_kernel
def _dropout_forward(y, mask, x, rate, scale, seed, step):
    # x (N,) -> y (N,), mask (N,) uint8; scale = 1 / (1 - rate); seed, step uint64
    key = _mix64(_mix64(seed) ^ step)
    factor = x.dtype.type(scale)
    # Each element's draw depends only on its index, so any split over threads is exact.
    for i in prange(x.shape[0]):
        bits = _mix64(key + np.uint64(i + 1) * _GOLDEN)
        keep = np.float64(bits >> _SHIFTS[3]) * _TWO_TO_MINUS_53 >= rate
        mask[i] = keep
        y[i] = x[i] * (factor if keep else x.dtype.type(0.0))


@parallel_kernel
def _dropout_backward(dx, mask, dy, scale):
    # dy (N,), mask (N,) uint8 -> dx (N,); scale = 1 / (1 - rate)
    factor = dy.dtype.type(scale)
    # Element-wise: each thread owns a range of dx.
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] * (factor if mask[i] else dy.dtype.type(0.0))


def dropout_forward(y: np.ndarray, mask: np.ndarray, x: np.ndarray, rate: float, seed: int,
                    step: int) -> None:
    """``y = x * mask / (1 - rate)``; ``mask`` (uint8, same shape) records the kept elements.

    ``seed`` is any integer in ``[0, 2**64)`` and ``step`` a non-negative training-step
    counter (below ``2**64``): a new ``step`` draws a new mask.
    """
    rate = _checked_rate(rate)
    if not 0 <= seed < 2**64 or not 0 <= step < 2**64:
        raise ValueError(f"seed and step must be in [0, 2**64), got {seed!r} and {step!r}")
    _dropout_forward(_flat(y, x.shape), _flat_mask(mask, x.shape), _flat(x, x.shape), rate,
                     1.0 / (1.0 - rate), np.uint64(seed), np.uint64(step))


def dropout_backward(dx: np.ndarray, mask: np.ndarray, dy: np.ndarray, rate: float) -> None:
    """``dx = dy * mask / (1 - rate)``, with the ``mask`` of the forward pass."""
    rate = _checked_rate(rate)
    _dropout_backward(_flat(dx, dy.shape), _flat_mask(mask, dy.shape), _flat(dy, dy.shape),
                      1.0 / (1.0 - rate))


def _checked_rate(rate: float) -> float:
    if not 0.0 <= rate < 1.0:  # also rejects NaN
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    return float(rate)


def _flat(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # reshape(-1) would silently copy a non-contiguous array and the kernel's writes be lost.
    if array.shape != shape or not array.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous array of shape {shape}, got shape "
                         f"{array.shape}, C-contiguous={array.flags.c_contiguous}")
    return array.reshape(-1)


def _flat_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if mask.dtype != np.uint8:  # another dtype would compile another kernel, mid-training
        raise ValueError(f"the dropout mask must be uint8, got {mask.dtype}")
    return _flat(mask, shape)


def _warmup(dtype) -> None:
    x = np.ones(4, dtype)
    y, dx, mask = np.empty_like(x), np.empty_like(x), np.empty(4, np.uint8)
    dropout_forward(y, mask, x, 0.5, 0, 0)
    dropout_backward(dx, mask, x, 0.5)
