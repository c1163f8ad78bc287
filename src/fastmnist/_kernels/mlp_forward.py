"""Class probabilities of a dense network in one call: the MLP's fast prediction path.

Run layer by layer from Python, predicting one image cost ~16 us of calls around ~2 us of
arithmetic, and 10,000 images went through BLAS on AVX2 kernels one layer at a time. Here
one call takes the rows from the raw input to the probabilities:

- the rows are split into ``n_parts`` contiguous runs, one per thread;
- each thread takes its run a block of rows at a time through every layer (``gemm.matmul``,
  bias, activation), so a block's activations stay in the core's cache, and ends with the
  output activation (softmax, or one logistic unit for two classes).

Every row is computed alone, each output element accumulated over its inputs in order:
a row's probabilities have the same bits in any block, any split, on any thread count.

The layer table and the ``acts`` layout are ``mlp_steps``'s, for ``acts.shape[1]`` values per
part (one block of rows).
"""

from __future__ import annotations

import numpy as np
from numba import prange
from numba.extending import overload

from ._jit import inlined_kernel, parallel_kernel
from .activation import IDENTITY, LOGISTIC, activate_row
from .loss import softmax_row
from .mlp_steps import (
    CODE,
    FAN_IN,
    FAN_OUT,
    IN_AT,
    OUT_AT,
    WARMUP_LAYERS,
    _matrix,
    _part,
    affine_rows,
)


@inlined_kernel
def _forward_block(out, X, divisor, theta, layers, acts, row0, B):
    # Rows [row0, row0 + B) of X -> out; returns how many of them hold a NaN or infinity.
    last = layers.shape[0] - 1
    x = _input_rows(X, _matrix(acts, layers[0, IN_AT], B, layers[0, FAN_IN]), row0, divisor)
    n_bad = 0
    for layer in range(last + 1):
        n_in, n_out = layers[layer, FAN_IN], layers[layer, FAN_OUT]
        h = _matrix(acts, layers[layer, OUT_AT], B, n_out)
        h_in = x if layer == 0 else _matrix(acts, layers[layer, IN_AT], B, n_in)
        affine_rows(h, h_in, theta, layers, layer)
        for r in range(B):
            if layer == 0 and not np.isfinite(h[r, 0]):
                # A NaN or infinity in the input row makes its first unit non-finite (NaN
                # and inf survive every multiply-add); the reverse only for overflow, which
                # the caller tells apart by checking X itself.
                n_bad += 1
            if layer < last:
                activate_row(h[r], h[r], layers[layer, CODE])
    logits = _matrix(acts, layers[last, OUT_AT], B, layers[last, FAN_OUT])
    for r in range(B):
        if logits.shape[1] == 1:  # one logistic unit: P(class 1), P(class 0) = 1 - that
            activate_row(out[row0 + r, 1:], logits[r], LOGISTIC)
            out[row0 + r, 0] = 1 - out[row0 + r, 1]
        else:
            softmax_row(out[row0 + r], logits[r])
    return n_bad


def _input_rows(X, x, row0, divisor):
    """Rows [row0, row0 + len(x)) of X as the network's input: X's own rows if they already
    have x's dtype (and divisor is 1), else converted into x and divided by divisor."""


@overload(_input_rows, inline="always")
def _input_rows_overload(X, x, row0, divisor):
    if X.dtype == x.dtype:  # chosen at compile time: float32 rows are read in place
        def same_dtype(X, x, row0, divisor):
            return X[row0:row0 + x.shape[0]]
        return same_dtype

    def converted(X, x, row0, divisor):
        real = x.dtype.type
        for r in range(x.shape[0]):
            source = X[row0 + r]
            for j in range(source.size):
                x[r, j] = real(source[j]) / real(divisor)
        return x
    return converted


@parallel_kernel
def predict_proba(out, X, divisor, theta, layers, acts):
    # X (n, n_features), uint8 or float, scaled by 1 / divisor -> out (n, n_classes), with
    # n_classes = 2 for a single logistic output unit. acts (n_parts, values per block).
    # Returns the number of rows whose first hidden unit is not finite (see above).
    n_parts, n = acts.shape[0], X.shape[0]
    block = max(1, acts.shape[1] // _values_per_row(layers))
    n_bad = 0
    for part in prange(n_parts):
        r0, r1 = _part(n, part, n_parts)
        for row0 in range(r0, r1, block):
            n_bad += _forward_block(out, X, divisor, theta, layers, acts[part], row0,
                                    min(block, r1 - row0))
    return n_bad


@inlined_kernel
def _values_per_row(layers):
    # one row's input and every layer's output
    total = layers[0, FAN_IN]
    for layer in range(layers.shape[0]):
        total += layers[layer, FAN_OUT]
    return total


def _warmup(dtype) -> None:
    if dtype != np.float32:
        return  # float64 networks predict layer by layer
    # mlp_steps's network with a softmax head, and 3 -> 1 logistic; blocks of 2 rows, 2 parts
    softmax_net = WARMUP_LAYERS
    logistic_net = np.array([[3, 1, 0, 3, 0, 6, 0, IDENTITY]], np.int64)
    theta = np.linspace(-1, 1, 26).astype(dtype)
    X = np.arange(9, dtype=np.uint8).reshape(3, 3)
    for data in (X, X.astype(dtype)):
        for layers, size in ((softmax_net, 18), (logistic_net, 8)):
            for kernel in (predict_proba.parallel, predict_proba.serial):
                kernel(np.empty((3, 2), dtype), data, 255.0, theta, layers,
                       np.empty((2, size), dtype))
