"""MNIST and Fashion-MNIST as scikit-learn ``Bunch`` objects (or ``(X, y)``)."""

from __future__ import annotations

import os

import numpy as np

from ._files import fetch_idx

__all__ = ["load_fashion_mnist", "load_mnist"]

_SUBSET_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SUBSETS = {"train": ("train",), "test": ("test",), "all": ("train", "test")}

_TARGET_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}

_DESCR = {
    "mnist": (
        "MNIST handwritten digits (LeCun, Cortes and Burges).\n"
        "28x28 grey-scale images, pixels 0 (background) to 255 (ink), 10 classes (0-9).\n"
        "60,000 training and 10,000 test images; subset='all' is train then test.\n"
    ),
    "fashion-mnist": (
        "Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research), a drop-in\n"
        "replacement for MNIST: 28x28 grey-scale images of clothing, pixels 0-255,\n"
        "10 classes. 60,000 training and 10,000 test images; subset='all' is train then test.\n"
    ),
}


def load_mnist(
    subset: str = "train",
    *,
    data_home: str | os.PathLike | None = None,
    download: bool = True,
    return_X_y: bool = False,
):
    """Load the MNIST handwritten digits.

    Parameters
    ----------
    subset : {"train", "test", "all"}, default="train"
        The 60,000 training images, the 10,000 test images, or both (train first).
    data_home : str or path-like, default=None
        Where to look for (and download to) the files, before ``$FASTMNIST_DATA_HOME`` and
        ``~/.cache/fastmnist``. Files are ``<data_home>/mnist/<canonical name>[.gz]``.
    download : bool, default=True
        Download missing files from the canonical mirrors. Every file, downloaded or not,
        is verified against the SHA-256 of its canonical decompressed content.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a ``Bunch``.

    Returns
    -------
    data : Bunch
        ``data`` uint8 (n, 784); ``images`` uint8 (n, 28, 28), a view of the same memory;
        ``target`` uint8 (n,); ``target_names`` list of str; ``DESCR`` str.
    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from fastmnist import load_mnist
    >>> X, y = load_mnist("test", return_X_y=True)
    >>> X.shape, X.dtype, y[:5]
    ((10000, 784), dtype('uint8'), array([7, 2, 1, 0, 4], dtype=uint8))
    """
    return _load("mnist", subset, data_home, download, return_X_y)


def load_fashion_mnist(
    subset: str = "train",
    *,
    data_home: str | os.PathLike | None = None,
    download: bool = True,
    return_X_y: bool = False,
):
    """Load Fashion-MNIST; same parameters and return value as :func:`load_mnist`.

    Files are ``<data_home>/fashion-mnist/<canonical name>[.gz]``.
    """
    return _load("fashion-mnist", subset, data_home, download, return_X_y)


def _load(dataset, subset, data_home, download, return_X_y):
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be one of {sorted(_SUBSETS)}, got {subset!r}")
    images, targets = [], []
    for part in _SUBSETS[subset]:
        image_file, label_file = _SUBSET_FILES[part]
        images.append(fetch_idx(dataset, image_file, data_home=data_home, download=download))
        targets.append(fetch_idx(dataset, label_file, data_home=data_home, download=download))
    images = images[0] if len(images) == 1 else np.concatenate(images)
    target = targets[0] if len(targets) == 1 else np.concatenate(targets)
    data = images.reshape(len(images), -1)
    if return_X_y:
        return data, target
    # Imported here: scikit-learn costs ~120 MB of resident memory, which a caller wanting
    # only the arrays (the benchmark's peer workers) should not pay.
    from sklearn.utils import Bunch

    return Bunch(
        data=data,
        images=images,
        target=target,
        target_names=list(_TARGET_NAMES[dataset]),
        DESCR=_DESCR[dataset],
    )
