"""Plain-Python/NumPy references that the fast code is checked against.

Each is written for clarity, not speed, and shares no code with ``fastmnist``.
"""

import gzip
import struct

import numpy as np

MASK64 = (1 << 64) - 1

IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C,
    np.dtype("f4"): 0x0D,
    np.dtype("f8"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic, big-endian uint32 dims, big-endian items."""
    code = IDX_CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def splitmix64_stream(seed: int):
    """SplitMix64 (Steele, Lea and Flood 2014): an endless stream of 64-bit outputs."""
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        yield z ^ (z >> 31)


def fisher_yates(n: int, seed: int) -> np.ndarray:
    """Fisher-Yates from the top; each draw uniform in [0, i] by rejecting r < 2**64 % (i+1)."""
    values, stream = list(range(n)), splitmix64_stream(seed)
    for i in range(n - 1, 0, -1):
        bound = i + 1
        r = next(stream)
        while r < (1 << 64) % bound:
            r = next(stream)
        j = r % bound
        values[i], values[j] = values[j], values[i]
    return np.array(values, dtype=np.int64)


def gather(X, index, divisor, mean=None, std=None):
    """Rows of X selected by index, as float32, divided, optionally standardised."""
    out = X[index].astype(np.float32) / np.float32(divisor)
    if mean is not None:
        out = (out - mean) / std
    return out


# --- kernels ------------------------------------------------------------------------------

def dense_forward(x, W, b):
    return x @ W + b


def dense_backward(dy, x, W):
    """(dx, dW, db) of y = x W + b."""
    return dy @ W.T, x.T @ dy, dy.sum(axis=0)


def activation(name, x):
    """scikit-learn's four activations, in plain NumPy."""
    if name == "logistic":
        with np.errstate(over="ignore"):  # exp(1e4) = inf gives the right limit, 0
            return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0)
    return x.copy()


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels, weights):
    """(weighted mean loss, its gradient w.r.t. logits), computed the textbook way."""
    log_p = np.log(softmax(logits))
    losses = -log_p[np.arange(len(labels)), labels]
    onehot = np.eye(logits.shape[1])[labels]
    loss = (weights * losses).sum() / weights.sum()
    grad = weights[:, None] * (softmax(logits) - onehot) / weights.sum()
    return loss, grad


def logistic_cross_entropy(logits, labels, weights):
    """Binary log loss of one logit per row, and its gradient, the textbook way."""
    p = 1 / (1 + np.exp(-logits[:, 0]))
    losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    loss = (weights * losses).sum() / weights.sum()
    return loss, (weights * (p - labels) / weights.sum())[:, None]


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar function f at x (float64), one element at a time."""
    grad = np.zeros_like(x)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = f()
        flat[i] = saved - eps
        down = f()
        flat[i] = saved
        g[i] = (up - down) / (2 * eps)
    return grad
