import gzip
import hashlib
import shutil

import numpy as np
import pytest
from naive import gzip_bytes, idx_bytes

from fastmnist import load_fashion_mnist, load_mnist
from fastmnist.datasets import ChecksumError, DataNotFoundError, get_data_home_candidates
from fastmnist.datasets._files import CHECKSUMS

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_checksums_match_the_shared_sums_file(shared_data):
    # The table in the code was computed from the real files; recompute it independently.
    for line in (shared_data / "SHA256SUMS").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        digest, relative = line.split()
        dataset, filename = relative.split("/")
        name = filename.removesuffix(".gz")
        assert CHECKSUMS[dataset][name] == digest
        decompressed = gzip.open(shared_data / relative).read()
        assert hashlib.sha256(decompressed).hexdigest() == digest


def test_load_mnist_train_bunch(shared_data):
    bunch = load_mnist("train", download=False)
    assert bunch.data.shape == (60000, 784) and bunch.data.dtype == np.uint8
    assert bunch.images.shape == (60000, 28, 28)
    assert np.shares_memory(bunch.data, bunch.images)  # one copy of the pixels, two views
    assert bunch.target.shape == (60000,)
    assert bunch.target[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(bunch.target).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert bunch.target_names == [str(d) for d in range(10)]
    assert "MNIST" in bunch.DESCR
    assert bunch.data.max() == 255 and bunch.data.min() == 0


def test_load_mnist_test_and_all(shared_data):
    X_test, y_test = load_mnist("test", return_X_y=True, download=False)
    assert X_test.shape == (10000, 784)
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    X_all, y_all = load_mnist("all", return_X_y=True, download=False)
    assert X_all.shape == (70000, 784)
    np.testing.assert_array_equal(X_all[60000:], X_test)
    np.testing.assert_array_equal(y_all[60000:], y_test)


def test_load_fashion_mnist(shared_data):
    bunch = load_fashion_mnist("train", download=False)
    assert bunch.data.shape == (60000, 784)
    assert bunch.target[:5].tolist() == [9, 0, 0, 3, 0]
    assert np.bincount(bunch.target).tolist() == [6000] * 10
    assert bunch.target_names[9] == "Ankle boot"
    X, y = load_fashion_mnist("test", return_X_y=True, download=False)
    assert X.shape == (10000, 784) and np.bincount(y).tolist() == [1000] * 10


def test_unknown_subset():
    with pytest.raises(ValueError, match="subset must be one of"):
        load_mnist("validation")


def make_home(root, dataset="mnist", raw=False, shared=None):
    folder = root / dataset
    folder.mkdir(parents=True)
    for name in FILES:
        source = shared / dataset / f"{name}.gz"
        if raw:
            (folder / name).write_bytes(gzip.open(source).read())
        else:
            shutil.copy(source, folder / f"{name}.gz")
    return root


def test_lookup_order_argument_then_env_then_cache(isolated_homes, shared_data, monkeypatch):
    explicit, env, cache = (isolated_homes / d for d in ("explicit", "env", "home"))
    monkeypatch.setenv("FASTMNIST_DATA_HOME", str(env))
    assert get_data_home_candidates(explicit) == [explicit, env, cache / ".cache" / "fastmnist"]

    make_home(cache / ".cache" / "fastmnist", shared=shared_data)
    assert load_mnist("test", download=False).data.shape == (10000, 784)  # found in the cache
    # An uncompressed copy in the env home is found (and verified) before the cache.
    make_home(env, raw=True, shared=shared_data)
    shutil.rmtree(cache)
    assert load_mnist("test", download=False).data.shape == (10000, 784)
    # A wrong file in the explicit home is used first, and refused.
    (explicit / "mnist").mkdir(parents=True)
    wrong = idx_bytes(np.zeros((10000, 28, 28), np.uint8))
    (explicit / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip_bytes(wrong))
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz: SHA-256") as info:
        load_mnist("test", data_home=explicit, download=False)
    assert CHECKSUMS["mnist"]["t10k-images-idx3-ubyte"] in str(info.value)
    # A local file is the user's: a failed check reports it and leaves it in place.
    assert (explicit / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_missing_files_offline_say_where_to_put_them(isolated_homes):
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("train", data_home=isolated_homes / "mine", download=False)
    message = str(info.value)
    assert "'train-images-idx3-ubyte' not found" in message
    for place in (isolated_homes / "mine" / "mnist" / "train-images-idx3-ubyte.gz",
                  isolated_homes / "mine" / "mnist" / "train-images-idx3-ubyte",
                  isolated_homes / "home" / ".cache" / "fastmnist" / "mnist"):
        assert str(place) in message
    assert "download=False" in message and "FASTMNIST_DATA_HOME" in message
    assert isinstance(info.value, FileNotFoundError)
