"""The four activations scikit-learn's MLPClassifier offers, forward and backward.

One kernel pair dispatches on an integer code rather than taking a function argument:
a function passed into a cached kernel makes the cache miss on every run.
Backward works from the forward *output* y (as scikit-learn's derivatives do), so the
forward pass may run in place (y is x) and no input needs keeping.
"""

import numpy as np
from numba import prange

from ._jit import parallel_kernel

IDENTITY, LOGISTIC, TANH, RELU = 0, 1, 2, 3
ACTIVATIONS = {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH, "relu": RELU}


@parallel_kernel
def activation_forward(y, x, code):
    # x (B, N) -> y (B, N); y may be x (in place)
    # Rows are independent: each thread owns whole rows. The branch on code sits outside
    # the inner loop so that each inner loop vectorises.
    for i in prange(x.shape[0]):
        if code == LOGISTIC:
            for j in range(x.shape[1]):
                # exp of a large positive argument overflows: use the form that cannot.
                v = x[i, j]
                e = np.exp(-abs(v))
                y[i, j] = 1 / (1 + e) if v >= 0 else e / (1 + e)
        elif code == TANH:
            for j in range(x.shape[1]):
                y[i, j] = np.tanh(x[i, j])
        elif code == RELU:
            for j in range(x.shape[1]):
                # Written so that NaN stays NaN: NaN <= 0 is False.
                y[i, j] = 0 if x[i, j] <= 0 else x[i, j]
        else:
            for j in range(x.shape[1]):
                y[i, j] = x[i, j]


@parallel_kernel
def activation_backward(dx, dy, y, code):
    # dy (B, N), y = f(x) (B, N) -> dx (B, N) = dy * f'(x); dx may be dy (in place)
    for i in prange(y.shape[0]):
        if code == LOGISTIC:
            for j in range(y.shape[1]):
                dx[i, j] = dy[i, j] * y[i, j] * (1 - y[i, j])
        elif code == TANH:
            for j in range(y.shape[1]):
                dx[i, j] = dy[i, j] * (1 - y[i, j] * y[i, j])
        elif code == RELU:
            for j in range(y.shape[1]):
                dx[i, j] = 0 if y[i, j] == 0 else dy[i, j]
        else:
            for j in range(y.shape[1]):
                dx[i, j] = dy[i, j]


def _warmup(dtype):
    x = np.linspace(-1, 1, 6).astype(dtype).reshape(2, 3)
    y = np.empty_like(x)
    for code in ACTIVATIONS.values():
        activation_forward(y, x, code)
        activation_backward(np.empty_like(x), x, y, code)
