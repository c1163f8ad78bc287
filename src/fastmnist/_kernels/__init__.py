"""Numba kernels: every heavy step of training and prediction, forward and backward.

Kernels are pure functions of arrays and scalars (outputs, caches, inputs, parameters,
sizes, in that order) and import nothing from the rest of fastmnist but ``_config``.
"""

from __future__ import annotations

import importlib
import time

import numpy as np

KERNEL_MODULES = ("gemm", "dense", "activation", "loss", "conv", "pool", "conv_pool", "norm",
                  "dropout", "optim", "mlp_steps", "mlp_forward", "winograd", "cnn_forward")


def warmup(dtypes=(np.float32,)) -> dict[str, float]:
    """Compile (or load from the disk cache) every kernel, on tiny arrays.

    Returns the seconds spent per kernel module, so that start-up cost can be reported
    rather than hidden inside the first training step.
    """
    seconds = {}
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        start = time.perf_counter()
        for dtype in dtypes:
            module._warmup(np.dtype(dtype))
        seconds[name] = time.perf_counter() - start
    return seconds
