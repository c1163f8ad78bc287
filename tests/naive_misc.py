"""Plain NumPy references for batch normalisation, dropout and the optimizer steps.

Written for clarity, not speed, in float64 whatever the input dtype, and sharing no code
with ``fastmnist``.
"""

import numpy as np

MASK64 = (1 << 64) - 1
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
