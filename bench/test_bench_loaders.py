"""Loader and batching benchmarks: fastmnist side by side with the plain NumPy way.

Run: ``pytest bench --benchmark-json=.benchmarks/loaders.json`` then
``python bench/ratios.py .benchmarks/loaders.json`` for the median ratios per group.
Each group holds one ``fastmnist`` and one ``reference`` benchmark, measured in one run.
"""

import gzip

import numpy as np
import pytest

from fastmnist import load_idx
from fastmnist.datasets import Minibatches, gather_batch

TRAIN_IMAGES = "mnist/train-images-idx3-ubyte.gz"


def run(benchmark, impl, function, *args):
    benchmark.extra_info["impl"] = impl
    return benchmark(function, *args)


@pytest.fixture(scope="module")
def train_images(shared_data):
    return load_idx(shared_data / TRAIN_IMAGES).reshape(60000, 784)


def numpy_load(path):
    return np.frombuffer(gzip.open(path).read()[16:], np.uint8)


@pytest.mark.benchmark(group="load train-images-idx3-ubyte.gz (60000x28x28)")
@pytest.mark.parametrize("impl", ["fastmnist", "reference"])
def test_load_idx(benchmark, shared_data, impl):
    path = shared_data / TRAIN_IMAGES
    function = load_idx if impl == "fastmnist" else numpy_load
    result = run(benchmark, impl, function, path)
    assert result.size == 60000 * 784


def numpy_gather(X, index):
    return X[index].astype(np.float32) / np.float32(255)


@pytest.mark.parametrize("batch_size", [32, 128, 1024])
@pytest.mark.parametrize("impl", ["fastmnist", "reference"])
def test_gather_batch(benchmark, train_images, impl, batch_size):
    benchmark.group = f"gather uint8 batch of {batch_size} -> float32 / 255"
    index = np.random.default_rng(0).permutation(60000)[:batch_size]
    if impl == "fastmnist":
        out = np.empty((batch_size, 784), np.float32)
        assert run(benchmark, impl, gather_batch, train_images, index, out) == batch_size
    else:
        assert run(benchmark, impl, numpy_gather, train_images, index).shape == (batch_size, 784)


def fastmnist_epoch(batches, seed):
    return sum(len(xb) for xb, _, _ in batches.epoch(seed))


def numpy_epoch(X, y, batch_size, seed):
    order, rows = np.random.default_rng(seed).permutation(len(X)), 0
    for start in range(0, len(X), batch_size):
        index = order[start:start + batch_size]
        xb, _ = numpy_gather(X, index), y[index]
        rows += len(xb)
    return rows


@pytest.mark.parametrize("batch_size", [32, 128])
@pytest.mark.parametrize("impl", ["fastmnist", "reference"])
def test_epoch_of_batches(benchmark, train_images, impl, batch_size):
    benchmark.group = f"one shuffled epoch of 60000 images and labels, batch {batch_size}"
    y = np.zeros(60000, np.int64)
    if impl == "fastmnist":
        batches = Minibatches(train_images, y, batch_size)
        rows = run(benchmark, impl, fastmnist_epoch, batches, 1)
    else:
        rows = run(benchmark, impl, numpy_epoch, train_images, y, batch_size, 1)
    assert rows == 60000
