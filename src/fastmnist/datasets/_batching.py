"""Minibatches for training: seeded shuffles and gathers into reused float32 buffers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import _batch

__all__ = ["Minibatches", "gather_batch", "shuffled_indices"]

# uint8 pixels are scaled to [0, 1] as they are gathered; float32 input is taken as is.
_DEFAULT_DIVISOR = {np.dtype(np.uint8): 255.0, np.dtype(np.float32): 1.0}


def shuffled_indices(n: int, seed: int) -> np.ndarray:
    """A reproducible permutation of ``range(n)`` as int64: the same seed, the same order.

    ``seed`` is any integer in ``[0, 2**64)``. The generator is fastmnist's own (SplitMix64
    with an unbiased Fisher-Yates shuffle), so the order does not change with NumPy.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    indices = np.arange(n, dtype=np.int64)
    _batch.shuffle(indices, seed)
    return indices


def gather_batch(
    X: np.ndarray,
    index: np.ndarray,
    out: np.ndarray,
    *,
    divisor: float | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    y: np.ndarray | None = None,
    y_out: np.ndarray | None = None,
    n_threads: int = -1,
) -> int:
    """Gather ``X[index]`` into ``out`` as float32, scaled, without the GIL; return the rows.

    Parameters
    ----------
    X : ndarray of uint8 or float32, shape (n_samples, n_features), C-contiguous
    index : array of int, shape (k,)
        Rows to take, in order; every entry must be in ``[0, n_samples)``.
    out : ndarray of float32, shape (>= k, n_features), C-contiguous
        Written in its first ``k`` rows: ``X[index].astype(np.float32) / divisor``, and then
        ``(. - mean) / std`` if ``mean`` and ``std`` are given; bit for bit what NumPy gives.
    divisor : float, default=None
        255 for uint8 ``X`` (pixels to [0, 1]), 1 for float32 ``X``.
    mean, std : ndarray of float32, shape (n_features,), default=None
        Optional standardisation after scaling.
    y, y_out : ndarray of int64, shapes (n_samples,) and (>= k,), default=None
        Labels gathered alongside: ``y_out[:k] = y[index]``.
    n_threads : int, default=-1
        OpenMP threads; -1 for OpenMP's default. Small batches always use one thread.

    Returns
    -------
    k : int
        The number of rows written, ``len(index)``.
    """
    divisor, mean, std = _check_gather_arguments(X, out, divisor, mean, std)
    index = np.ascontiguousarray(index, dtype=np.int64)
    return _batch.gather_batch(X, index, out, divisor, mean, std, y, y_out, n_threads)


def _check_gather_arguments(X, out, divisor, mean, std):
    """Dtype checks and conversions done once, outside the per-batch call."""
    if X.dtype not in _DEFAULT_DIVISOR:
        raise TypeError(f"X must be uint8 or float32, got {X.dtype}")
    if X.ndim != 2 or out.ndim != 2:
        raise ValueError(f"X and out must be 2-D, got shapes {X.shape} and {out.shape}")
    if out.dtype != np.float32:
        raise TypeError(f"out must be float32, got {out.dtype}")
    if divisor is None:
        divisor = _DEFAULT_DIVISOR[X.dtype]
    mean = None if mean is None else np.ascontiguousarray(mean, dtype=np.float32)
    std = None if std is None else np.ascontiguousarray(std, dtype=np.float32)
    return divisor, mean, std


class Minibatches:
    """Iterate over ``(X, y)`` in minibatches gathered into two reused buffers.

    The training set is never converted as a whole: uint8 images stay uint8 in memory and
    each batch is scaled to float32 as it is gathered. The batches an epoch yields are views
    of the same buffers, valid until the next batch is drawn.

    Parameters
    ----------
    X : ndarray of uint8, float32 or float64, shape (n_samples, n_features)
        uint8 and float32 are gathered to float32 in Cython; float64 stays float64.
    y : ndarray of int, shape (n_samples,), default=None
    batch_size : int
    divisor, mean, std, n_threads
        As in :func:`gather_batch`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmnist.datasets import Minibatches
    >>> X = np.arange(10, dtype=np.uint8).reshape(5, 2)
    >>> batches = Minibatches(X, np.arange(5), batch_size=2)
    >>> [(xb.shape, yb.tolist()) for xb, yb, _ in batches.epoch(seed=None)]
    [((2, 2), [0, 1]), ((2, 2), [2, 3]), ((1, 2), [4])]
    """

    def __init__(self, X, y=None, batch_size: int = 200, *, divisor=None, mean=None,
                 std=None, n_threads: int = -1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.X = np.ascontiguousarray(X)
        self.y = None if y is None else np.ascontiguousarray(y, dtype=np.int64)
        if self.y is not None and len(self.y) != len(self.X):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)} labels")
        self.batch_size = batch_size
        self.n_threads = n_threads
        rows = min(batch_size, len(self.X))
        # float64 data (scikit-learn's default) is gathered as float64 by NumPy, so that a
        # model trained on it computes in float64 as scikit-learn's does.
        self._float64 = self.X.dtype == np.float64
        out_dtype = np.float64 if self._float64 else np.float32
        self._X_buffer = np.empty((rows, *self.X.shape[1:]), dtype=out_dtype)
        self._y_buffer = None if self.y is None else np.empty(rows, dtype=np.int64)
        if self._float64:
            if divisor not in (None, 1.0) or mean is not None or std is not None:
                raise ValueError("float64 X is gathered as it is: no divisor, mean or std")
        else:
            self._divisor, self._mean, self._std = _check_gather_arguments(
                self.X, self._X_buffer, divisor, mean, std)

    def __len__(self) -> int:
        return -(-len(self.X) // self.batch_size)

    def epoch(self, seed: int | None) -> Iterator[tuple[np.ndarray, np.ndarray | None,
                                                       np.ndarray]]:
        """Yield ``(X_batch, y_batch, index)`` for one epoch, shuffled by ``seed``.

        ``index`` holds the rows of ``X`` in the batch (to gather sample weights with);
        with ``seed=None`` the rows come in order.
        """
        n = len(self.X)
        order = self.order(seed)
        if self._float64:
            yield from self._numpy_epoch(order)
            return
        gatherer = _batch.EpochGatherer(
            self.X, order, self._X_buffer, self._divisor, self._mean, self._std,
            self.y, self._y_buffer, self.n_threads,
        )
        for start in range(0, n, self.batch_size):
            k = gatherer.gather(start, start + self.batch_size)
            index = order[start:start + k]
            yield self._X_buffer[:k], None if self.y is None else self._y_buffer[:k], index

    def order(self, seed: int | None) -> np.ndarray:
        """The rows of ``X`` in the order ``epoch(seed)`` yields them."""
        n = len(self.X)
        return np.arange(n, dtype=np.int64) if seed is None else shuffled_indices(n, seed)

    def _numpy_epoch(self, order):
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            k = len(index)
            np.take(self.X, index, axis=0, out=self._X_buffer[:k])
            if self.y is not None:
                np.take(self.y, index, out=self._y_buffer[:k])
            yield self._X_buffer[:k], None if self.y is None else self._y_buffer[:k], index
