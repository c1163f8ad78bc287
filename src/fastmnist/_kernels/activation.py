"""The four activations scikit-learn's MLPClassifier offers, forward and backward.

One kernel pair dispatches on an integer code rather than taking a function argument:
a function passed into a cached kernel makes the cache miss on every run.
Backward works from the forward *output* y (as scikit-learn's derivatives do), so the
forward pass may run in place (y is x) and no input needs keeping.
"""

import numpy as np
from numba import prange

from ._jit import inlined_kernel, parallel_kernel

IDENTITY, LOGISTIC, TANH, RELU = 0, 1, 2, 3
ACTIVATIONS = {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH, "relu": RELU}


@inlined_kernel
def activate_row(y, x, code):
    # x (N,) -> y (N,); y may be x (in place). The branch on code sits outside the loops so
    # that each loop vectorises.
    if code == LOGISTIC:
        for j in range(x.size):
            # exp of a large positive argument overflows: use the form that cannot.
            v = x[j]
            e = np.exp(-abs(v))
            y[j] = 1 / (1 + e) if v >= 0 else e / (1 + e)
    elif code == TANH:
        for j in range(x.size):
            y[j] = np.tanh(x[j])
    elif code == RELU:
        for j in range(x.size):
            # Written so that NaN stays NaN: NaN <= 0 is False.
            y[j] = 0 if x[j] <= 0 else x[j]
    else:
        for j in range(x.size):
            y[j] = x[j]


@inlined_kernel
def activation_grad_row(dx, dy, y, code):
    # dy (N,), y = f(x) (N,) -> dx (N,) = dy * f'(x); dx may be dy (in place)
    if code == LOGISTIC:
        for j in range(y.size):
            dx[j] = dy[j] * y[j] * (1 - y[j])
    elif code == TANH:
        for j in range(y.size):
            dx[j] = dy[j] * (1 - y[j] * y[j])
    elif code == RELU:
        for j in range(y.size):
            dx[j] = 0 if y[j] == 0 else dy[j]
    else:
        for j in range(y.size):
            dx[j] = dy[j]


@parallel_kernel
def activation_forward(y, x, code):
    # x (B, N) -> y (B, N); y may be x (in place)
    for i in prange(x.shape[0]):  # rows are independent: each thread owns whole rows
        activate_row(y[i], x[i], code)


@parallel_kernel
def activation_backward(dx, dy, y, code):
    # dy (B, N), y = f(x) (B, N) -> dx (B, N) = dy * f'(x); dx may be dy (in place)
    for i in prange(y.shape[0]):
        activation_grad_row(dx[i], dy[i], y[i], code)


def _warmup(dtype):
    x = np.linspace(-1, 1, 6).astype(dtype).reshape(2, 3)
    y = np.empty_like(x)
    for code in ACTIVATIONS.values():
        activation_forward(y, x, code)
        activation_backward(np.empty_like(x), x, y, code)
