"""Plain NumPy references for convolution and pooling (NCHW), written for clarity.

They share no code with ``fastmnist``: each output is computed from its window of a zero
padded copy of the input, and each gradient by adding every window's contribution back.
"""

import numpy as np


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
