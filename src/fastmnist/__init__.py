"""fastmnist: fast CPU training of neural-network classifiers for MNIST-like images."""

from ._cnn import CNNClassifier
from ._kernels import warmup
from ._mlp import MLPClassifier
from .datasets import IDXFormatError, load_fashion_mnist, load_idx, load_mnist

__version__ = "0.1.0"

__all__ = [
    "CNNClassifier",
    "IDXFormatError",
    "MLPClassifier",
    "__version__",
    "load_fashion_mnist",
    "load_idx",
    "load_mnist",
    "warmup",
]
