"""fastmnist: fast CPU training of neural-network classifiers for MNIST-like images.

The public names load on first use (PEP 562): ``import fastmnist.datasets`` alone, as the
benchmark's peer workers do to read MNIST, imports neither scikit-learn nor Numba, whose
resident memory (about 125 and 50 MB) would otherwise be charged to every peer.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the submodule that defines it
_EXPORTS = {
    "CNNClassifier": "._cnn",
    "MLPClassifier": "._mlp",
    "warmup": "._kernels",
    "IDXFormatError": ".datasets",
    "load_fashion_mnist": ".datasets",
    "load_idx": ".datasets",
    "load_mnist": ".datasets",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
