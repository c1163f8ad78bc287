"""Data: IDX files, MNIST and Fashion-MNIST, and minibatch gathering."""

from ._batching import Minibatches, gather_batch, shuffled_indices
from ._files import ChecksumError, DataNotFoundError, get_data_home_candidates
from ._idx_file import IDXFormatError, load_idx
from ._mnist import load_fashion_mnist, load_mnist

__all__ = [
    "ChecksumError",
    "DataNotFoundError",
    "IDXFormatError",
    "Minibatches",
    "gather_batch",
    "get_data_home_candidates",
    "load_fashion_mnist",
    "load_idx",
    "load_mnist",
    "shuffled_indices",
]
