import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import fisher_yates, gather, splitmix64_stream

from fastmnist.datasets import Minibatches, _batch, gather_batch, shuffled_indices


def test_generator_matches_reference_and_published_values():
    # SplitMix64 seeded with 0 starts 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4 (reference C code).
    assert _batch._splitmix64_py(0, 2) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    stream = splitmix64_stream(2**64 - 1)
    assert _batch._splitmix64_py(2**64 - 1, 5) == [next(stream) for _ in range(5)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000])
@pytest.mark.parametrize("seed", [0, 1, 12345, 2**64 - 1])
def test_shuffle_matches_reference_fisher_yates(n, seed):
    np.testing.assert_array_equal(shuffled_indices(n, seed), fisher_yates(n, seed))


def test_shuffle_is_a_reproducible_permutation():
    a, b = shuffled_indices(60000, 7), shuffled_indices(60000, 7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.sort(a), np.arange(60000))
    assert not np.array_equal(a, shuffled_indices(60000, 8))
    assert not np.array_equal(a, np.arange(60000))


def test_shuffle_is_uniform_over_permutations():
    # 6 permutations of 3 items, 6000 seeds: each count is ~Binomial(6000, 1/6),
    # sd ~ 29; a chi-square with 5 degrees of freedom above 30 has p < 2e-5.
    counts = dict.fromkeys(itertools.permutations(range(3)), 0)
    for seed in range(6000):
        counts[tuple(shuffled_indices(3, seed))] += 1
    chi2 = sum((c - 1000) ** 2 / 1000 for c in counts.values())
    assert chi2 < 30, counts


def test_shuffle_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        shuffled_indices(5, -1)
    with pytest.raises(ValueError, match="seed"):
        shuffled_indices(5, 2**64)
    with pytest.raises(ValueError, match="n must be"):
        shuffled_indices(-3, 0)


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("n_rows, n_cols", [(1, 1), (7, 13), (128, 784), (300, 784)])
def test_gather_equals_numpy_bit_for_bit(dtype, n_rows, n_cols):
    rng = np.random.default_rng(0)
    X = (rng.integers(0, 256, (n_rows * 2, n_cols)) if dtype == np.uint8
         else rng.standard_normal((n_rows * 2, n_cols))).astype(dtype)
    index = rng.integers(0, len(X), n_rows)
    out = np.full((n_rows + 3, n_cols), np.nan, np.float32)
    divisor = 255.0 if dtype == np.uint8 else 3.0
    assert gather_batch(X, index, out, divisor=divisor) == n_rows
    np.testing.assert_array_equal(bits(out[:n_rows]), bits(gather(X, index, divisor)))
    assert np.isnan(out[n_rows:]).all()  # rows past the batch untouched

    mean = rng.random(n_cols, dtype=np.float32)
    std = rng.random(n_cols, dtype=np.float32) + 0.5
    gather_batch(X, index, out, divisor=divisor, mean=mean, std=std)
    np.testing.assert_array_equal(bits(out[:n_rows]),
                                  bits(gather(X, index, divisor, mean, std)))


def test_default_divisor_scales_uint8_to_unit_interval():
    X = np.array([[0, 51, 255]], np.uint8)
    out = np.empty((1, 3), np.float32)
    gather_batch(X, [0], out)
    np.testing.assert_array_equal(out, [[0.0, np.float32(51) / np.float32(255), 1.0]])
    gather_batch(X.astype(np.float32), [0], out)  # float32 input is taken as is
    np.testing.assert_array_equal(out, [[0, 51, 255]])


def test_labels_gathered_alongside():
    X = np.arange(20, dtype=np.uint8).reshape(10, 2)
    y = np.arange(100, 110, dtype=np.int64)
    out, y_out = np.empty((4, 2), np.float32), np.full(4, -1, np.int64)
    assert gather_batch(X, [9, 0, 3], out, y=y, y_out=y_out) == 3
    assert y_out.tolist() == [109, 100, 103, -1]


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (5000, 784), dtype=np.uint8)
    index = rng.permutation(5000)[:1000]  # 784k elements: the parallel path
    out1, out2 = np.empty((1000, 784), np.float32), np.empty((1000, 784), np.float32)
    gather_batch(X, index, out1, n_threads=1)
    gather_batch(X, index, out2, n_threads=2)
    np.testing.assert_array_equal(bits(out1), bits(out2))
    np.testing.assert_array_equal(out1, gather(X, index, 255))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 30), k=st.integers(0, 50), seed=st.integers(0, 99))
def test_gather_property(n, d, k, seed):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, d), dtype=np.uint8)
    index = rng.integers(0, n, k)
    out = np.empty((k, d), np.float32)
    assert gather_batch(X, index, out) == k
    np.testing.assert_array_equal(out, gather(X, index, 255))


def test_gather_rejects_bad_input():
    X = np.zeros((5, 3), np.uint8)
    out = np.empty((4, 3), np.float32)
    with pytest.raises(IndexError, match=r"index\[1\] = 5 is out of range for 5 rows"):
        gather_batch(X, [0, 5], out)
    with pytest.raises(IndexError, match=r"index\[0\] = -1"):
        gather_batch(X, [-1], out)
    with pytest.raises(TypeError, match="uint8 or float32, got float64"):
        gather_batch(X.astype(np.float64), [0], out)
    with pytest.raises(TypeError, match="out must be float32"):
        gather_batch(X, [0], out.astype(np.float64))
    with pytest.raises(ValueError, match="out has 2 columns, X has 3"):
        gather_batch(X, [0], np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="room for 4 rows, index selects 5"):
        gather_batch(X, [0] * 5, out)
    with pytest.raises(ValueError, match="mean and std must be given together"):
        gather_batch(X, [0], out, mean=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="3 entries"):
        gather_batch(X, [0], out, mean=np.zeros(2, np.float32), std=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="y and y_out must be given together"):
        gather_batch(X, [0], out, y=np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="2-D"):
        gather_batch(np.zeros(5, np.uint8), [0], out)


def test_minibatches_cover_each_row_once_in_reused_buffers():
    X = np.arange(70 * 4, dtype=np.uint8).reshape(70, 4)
    y = np.arange(70) * 10
    batches = Minibatches(X, y, batch_size=32)
    assert len(batches) == 3
    seen, buffers = [], set()
    for xb, yb, index in batches.epoch(seed=3):
        np.testing.assert_array_equal(yb, y[index])
        np.testing.assert_array_equal(xb, gather(X, yb // 10, 255))  # rows match their labels
        seen.extend(yb.tolist())
        buffers.add(xb.__array_interface__["data"][0])
    assert [len(b[1]) for b in batches.epoch(seed=3)] == [32, 32, 6]  # final partial batch
    assert sorted(seen) == y.tolist()
    assert len(buffers) == 1  # every batch lives in the same preallocated memory
    first = [yb.copy() for _, yb, _ in batches.epoch(seed=3)]
    again = [yb.copy() for _, yb, _ in batches.epoch(seed=3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    in_order = np.concatenate([yb.copy() for _, yb, _ in batches.epoch(seed=None)])
    np.testing.assert_array_equal(in_order, y)


def test_minibatches_without_labels_and_bad_arguments():
    X = np.ones((5, 2), np.float32)
    assert [yb for _, yb, _ in Minibatches(X, batch_size=2).epoch(None)] == [None] * 3
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Minibatches(X, batch_size=0)
    with pytest.raises(ValueError, match="X has 5 rows but y has 4 labels"):
        Minibatches(X, np.arange(4))


def test_epoch_gatherer_checks_order_and_ranges():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    out = np.empty((4, 2), np.float32)
    with pytest.raises(IndexError, match=r"order\[2\] = 6 is out of range for 6 rows"):
        _batch.EpochGatherer(X, np.array([0, 1, 6], np.int64), out)
    gatherer = _batch.EpochGatherer(X, np.array([5, 4, 3, 2, 1, 0], np.int64), out)
    assert gatherer.gather(4, 8) == 2  # the final partial batch stops at the order's end
    np.testing.assert_array_equal(out[:2], X[[1, 0]])
    with pytest.raises(ValueError, match=r"cannot gather order\[0:5\] into 4 rows"):
        gatherer.gather(0, 5)
    with pytest.raises(ValueError, match="cannot gather"):
        gatherer.gather(-1, 2)
    with pytest.raises(ValueError, match="X has no columns"):
        _batch.EpochGatherer(np.zeros((3, 0), np.uint8), np.arange(3), np.empty((1, 0), np.float32))


def test_minibatches_keep_float64_as_float64():
    X = np.arange(10, dtype=np.float64).reshape(5, 2) / 3
    batches = Minibatches(X, np.arange(5), batch_size=2)
    got = [(xb.copy(), index.copy()) for xb, _, index in batches.epoch(seed=11)]
    assert all(xb.dtype == np.float64 for xb, _ in got)
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in got]),
                                  X[np.concatenate([index for _, index in got])])
    with pytest.raises(ValueError, match="float64 X is gathered as it is"):
        Minibatches(X, divisor=255.0)
