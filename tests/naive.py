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


# --- convolution and pooling (NCHW): each output from its window -------------------------

def padded(x, pad_top, pad_left, H_out, W_out, K, stride):
    """x with zeros around it: pad_top/pad_left before, as many as the windows need after."""
    B, C, H, W = x.shape
    height = max(H + pad_top, (H_out - 1) * stride + K)
    width = max(W + pad_left, (W_out - 1) * stride + K)
    xp = np.zeros((B, C, height, width), x.dtype)
    xp[:, :, pad_top:pad_top + H, pad_left:pad_left + W] = x
    return xp


def conv2d_forward(x, w, b, stride, pad_top, pad_left, H_out, W_out):
    """y[n, f, i, j] = b[f] + sum over c, u, v of w[f, c, u, v] * xp[n, c, i*s + u, j*s + v]."""
    F, C, K, _ = w.shape
    xp = padded(x, pad_top, pad_left, H_out, W_out, K, stride)
    y = np.zeros((x.shape[0], F, H_out, W_out), x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            window = xp[:, :, i * stride:i * stride + K, j * stride:j * stride + K]
            y[:, :, i, j] = np.einsum("ncuv,fcuv->nf", window, w) + b
    return y


def conv2d_backward(x, w, dy, stride, pad_top, pad_left):
    """(dx, dw, db) for the loss whose gradient with respect to y is dy."""
    B, C, H, W = x.shape
    F, _, K, _ = w.shape
    H_out, W_out = dy.shape[2:]
    xp = padded(x, pad_top, pad_left, H_out, W_out, K, stride)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + K)
            cols = slice(j * stride, j * stride + K)
            dxp[:, :, rows, cols] += np.einsum("nf,fcuv->ncuv", dy[:, :, i, j], w)
            dw += np.einsum("nf,ncuv->fcuv", dy[:, :, i, j], xp[:, :, rows, cols])
    dx = dxp[:, :, pad_top:pad_top + H, pad_left:pad_left + W]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def same_padding(size, K, stride):
    """TensorFlow's "same": (output size, padding before) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + K - size, 0)
    return out, total // 2


def maxpool2d_forward(x, pool, stride):
    """(y, argmax): the max of each window and the flat index i*W + j of its first max."""
    B, C, H, W = x.shape
    H_out, W_out = (H - pool) // stride + 1, (W - pool) // stride + 1
    y = np.zeros((B, C, H_out, W_out), x.dtype)
    argmax = np.zeros((B, C, H_out, W_out), np.int64)
    for n in range(B):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    window = x[n, c, i * stride:i * stride + pool, j * stride:j * stride + pool]
                    u, v = np.unravel_index(np.argmax(window), window.shape)  # first max/NaN
                    y[n, c, i, j] = window[u, v]
                    argmax[n, c, i, j] = (i * stride + u) * W + (j * stride + v)
    return y, argmax


def maxpool2d_backward(x_shape, argmax, dy):
    """Each output's gradient goes to its window's first max, overlapping windows adding."""
    dx = np.zeros(x_shape, dy.dtype)
    B, C, H, W = x_shape
    for n in range(B):
        for c in range(C):
            for index, g in zip(argmax[n, c].ravel(), dy[n, c].ravel(), strict=True):
                dx[n, c, index // W, index % W] += g
    return dx


def global_avgpool_forward(x):
    return x.mean(axis=(2, 3))


def global_avgpool_backward(x_shape, dy):
    B, C, H, W = x_shape
    return np.broadcast_to(dy[:, :, None, None] / (H * W), x_shape).copy()


# --- batch norm, dropout, optimizers -----------------------------------------------------

GOLDEN = 0x9E3779B97F4A7C15


# --- batch normalisation, NCHW, statistics per channel over (B, H, W) -------------------

def batchnorm_train(x, gamma, beta, running_mean, running_var, momentum, eps):
    """Returns y, x_hat, inv_std and the new running mean and variance."""
    x = x.astype(np.float64)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))  # biased: the one that normalises
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
    y = gamma[None, :, None, None] * x_hat + beta[None, :, None, None]
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)  # unbiased
    return y, x_hat, inv_std, new_mean, new_var


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps):
    def per_channel(a):
        return np.asarray(a, np.float64)[None, :, None, None]

    x_hat = (x - per_channel(running_mean)) / np.sqrt(per_channel(running_var) + eps)
    return per_channel(gamma) * x_hat + per_channel(beta)


def batchnorm_backward(dy, x, gamma, eps):
    """dx, dgamma, dbeta by the chain rule through mean and variance, step by step."""
    dy, x = dy.astype(np.float64), x.astype(np.float64)
    axes = (0, 2, 3)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    x_hat = (x - mean) / np.sqrt(var + eps)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dx_hat = dy * np.asarray(gamma, np.float64)[None, :, None, None]
    dvar = (dx_hat * (x - mean) * -0.5 * (var + eps) ** -1.5).sum(axis=axes, keepdims=True)
    dmean = (-dx_hat / np.sqrt(var + eps)).sum(axis=axes, keepdims=True) + dvar * (
        -2.0 * (x - mean)).mean(axis=axes, keepdims=True)
    dx = dx_hat / np.sqrt(var + eps) + dvar * 2.0 * (x - mean) / n + dmean / n
    return dx, dgamma, dbeta


# --- dropout --------------------------------------------------------------------------

def mix64(z):
    """SplitMix64's output function on a Python int."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def dropout_uniforms(seed, step, n):
    """u(seed, step, i) for i < n: the i-th SplitMix64 output from key, 53 bits in [0, 1)."""
    key = mix64(mix64(seed) ^ step)
    return np.array([(mix64((key + (i + 1) * GOLDEN) & MASK64) >> 11) / 2.0**53
                     for i in range(n)])


def dropout_mask(shape, rate, seed, step):
    return (dropout_uniforms(seed, step, int(np.prod(shape))) >= rate).reshape(shape)


def dropout(x, mask, rate):
    return x.astype(np.float64) * mask / (1.0 - rate)


# --- optimizers, on copies, as scikit-learn's _stochastic_optimizers --------------------

def decayed_grad(theta, grad, l2, n_decay):
    g = grad.astype(np.float64)
    g[:n_decay] += l2 * theta[:n_decay]
    return g


def sgd(theta, velocity, grad, lr, momentum, nesterov, l2, n_decay):
    """Returns the new theta and velocity."""
    theta, velocity = theta.astype(np.float64), velocity.astype(np.float64)
    g = decayed_grad(theta, grad, l2, n_decay)
    velocity = momentum * velocity - lr * g
    if nesterov:
        return theta + momentum * velocity - lr * g, velocity
    return theta + velocity, velocity


def adam(theta, m, v, grad, lr, beta1, beta2, eps, t, l2, n_decay):
    """Returns the new theta, m and v."""
    theta = theta.astype(np.float64)
    g = decayed_grad(theta, grad, l2, n_decay)
    m = beta1 * m.astype(np.float64) + (1 - beta1) * g
    v = beta2 * v.astype(np.float64) + (1 - beta2) * g**2
    lr_t = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
    return theta - lr_t * m / (np.sqrt(v) + eps), m, v
