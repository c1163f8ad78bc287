"""Fused, numerically stable losses with their gradients, and the output activations.

- softmax + cross-entropy, for several classes (one logit per class);
- logistic + binary cross-entropy, for two classes with a single logit, as scikit-learn's
  MLPClassifier does for binary problems.
"""

import numpy as np
from numba import prange

from ._jit import inlined_kernel, kernel, parallel_kernel


@kernel
def _checked_weight_sum(labels, n_classes, sample_weight):
    # labels (B,), sample_weight (B,) -> sum(sample_weight), after checking every label.
    # Serial, in row order: the loss is then the same for any thread count.
    total = 0.0
    for i in range(labels.shape[0]):
        if labels[i] < 0 or labels[i] >= n_classes:
            raise ValueError("cross-entropy: a label is outside [0, n_classes)")
        total += sample_weight[i]
    return total


@inlined_kernel
def _shifted_exp(out, logits):
    # logits (C,) -> out (C,) = exp(logits - max(logits)); returns the maximum and the sum
    # of out (in float64). Subtracting the maximum keeps exp() in range for logits of +-1e4.
    row_max = logits[0]
    for c in range(1, logits.size):
        if logits[c] > row_max:
            row_max = logits[c]
    total = 0.0
    for c in range(logits.size):
        out[c] = np.exp(logits[c] - row_max)
        total += out[c]
    return row_max, total


@inlined_kernel
def softmax_cross_entropy_row(dlogits, logits, label, weight, weight_sum):
    # logits (C,), label in [0, C) -> dlogits (C,) = weight * (softmax(z) - onehot(label)) /
    # weight_sum; returns weight * -log softmax(z)[label].
    row_max, total = _shifted_exp(dlogits, logits)
    scale = weight / weight_sum
    for c in range(logits.size):
        dlogits[c] = dlogits[c] / total * scale
    dlogits[label] -= scale
    # -log softmax(z)[label] = log(sum exp(z - max)) - (z[label] - max)
    return weight * (np.log(total) - (logits[label] - row_max))


@parallel_kernel
def softmax_cross_entropy(dlogits, row_loss, logits, labels, sample_weight):
    # logits (B, C), labels (B,) ints in [0, C), sample_weight (B,) -> dlogits (B, C),
    # row_loss (B,) scratch; returns the weighted mean loss sum(w * loss) / sum(w).
    # dlogits is the gradient of that mean: w_i * (softmax(z_i) - onehot(label_i)) / sum(w).
    n, n_classes = logits.shape
    # Sums over the batch run serially in row order, so the loss is the same for any
    # thread count; the per-row work (exp, log) is what runs in parallel.
    weight_sum = _checked_weight_sum(labels, n_classes, sample_weight)
    for i in prange(n):
        row_loss[i] = softmax_cross_entropy_row(dlogits[i], logits[i], labels[i],
                                                sample_weight[i], weight_sum)
    loss = 0.0
    for i in range(n):
        loss += row_loss[i]
    return loss / weight_sum


@inlined_kernel
def softmax_row(probs, logits):
    # logits (C,) -> probs (C,), summing to 1
    _, total = _shifted_exp(probs, logits)
    for c in range(logits.size):
        probs[c] /= total


@parallel_kernel
def softmax(probs, logits):
    # logits (B, C) -> probs (B, C), rows summing to 1
    for i in prange(logits.shape[0]):
        softmax_row(probs[i], logits[i])


@parallel_kernel
def logistic_cross_entropy(dlogits, row_loss, logits, labels, sample_weight):
    # logits (B, 1), labels (B,) in {0, 1}, sample_weight (B,) -> dlogits (B, 1),
    # row_loss (B,) scratch; returns sum(w * loss) / sum(w), as softmax_cross_entropy.
    n = logits.shape[0]
    weight_sum = _checked_weight_sum(labels, 2, sample_weight)
    for i in prange(n):
        z = logits[i, 0]
        # loss = log(1 + exp(-z)) for label 1, log(1 + exp(z)) for label 0, computed as
        # max(s, 0) + log1p(exp(-|s|)) with s = +-z, which neither overflows nor cancels.
        s = -z if labels[i] == 1 else z
        e = np.exp(-abs(z))
        p = 1 / (1 + e) if z >= 0 else e / (1 + e)  # sigmoid(z)
        scale = sample_weight[i] / weight_sum
        dlogits[i, 0] = (p - labels[i]) * scale
        row_loss[i] = sample_weight[i] * (max(s, 0.0) + np.log1p(e))
    loss = 0.0
    for i in range(n):
        loss += row_loss[i]
    return loss / weight_sum


def _warmup(dtype):
    logits = np.arange(6, dtype=dtype).reshape(2, 3)
    softmax_cross_entropy(np.empty_like(logits), np.empty(2, dtype), logits,
                          np.array([0, 2]), np.ones(2, dtype))
    softmax(np.empty_like(logits), logits)
    logistic_cross_entropy(np.empty_like(logits[:, :1]), np.empty(2, dtype),
                           np.ascontiguousarray(logits[:, :1]), np.array([0, 1]),
                           np.ones(2, dtype))
