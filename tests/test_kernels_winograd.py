"""Prediction's 3x3 convolution + ReLU + 2x2 max pool by Winograd's F(2x2, 3x3): the
references in tests/naive.py to rounding, the same bits on any thread count and batch
split, and transformed filters that follow the weights."""

import naive as naive
import numpy as np
import pytest

from fastmnist._kernels import conv, winograd
from fastmnist._kernels._jit import kernel

# (B, C, H, W, F, padding): one channel (outer products) and several, even and odd conv
# outputs, padding, more images than one product takes (several chunks and threads), planes
# smaller than a tile's reach, and cnn-keras's two layers.
CASES = [
    (1, 1, 28, 28, 32, "valid"),
    (2, 32, 13, 13, 64, "valid"),
    (3, 2, 9, 8, 5, "same"),
    (25, 3, 7, 7, 4, "valid"),
    (2, 1, 4, 4, 1, "valid"),
    (4, 2, 5, 6, 3, "same"),
    (2, 3, 3, 3, 2, "valid"),  # a 1x1 output: no pooling window, nothing to compute
]

RTOL = {np.float32: 1e-5, np.float64: 1e-13}


def make(case, dtype, seed=0):
    B, C, H, W, F, padding = case
    rng = np.random.default_rng(seed)
    x = rng.random((B, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, conv.conv_output_shape(H, W, 3, 1, padding)


def reference(x, w, b, H_out, W_out, pad_top, pad_left):
    h = naive.activation("relu", naive.conv2d_forward(x, w, b, 1, pad_top, pad_left,
                                                      H_out, W_out))
    return naive.maxpool2d_forward(h, 2, 2)[0]


def transformed(w):
    U = np.empty(winograd.filters_shape(w.shape[1], w.shape[0]), w.dtype)
    assert winograd.transform_filters(U, np.full_like(w, np.nan), w)
    return U


def predict(x, w, b, H_out, W_out, pad_top, pad_left, threads=2, twin="__call__"):
    y = np.full((len(x), len(w), H_out // 2, W_out // 2), np.nan, x.dtype)
    getattr(winograd.conv2d_relu_pool_winograd, twin)(y, x, transformed(w), b, pad_top,
                                                      pad_left, threads)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_matches_the_reference(case, dtype):
    x, w, b, geometry = make(case, dtype)
    want = reference(x, w, b, *geometry)
    got = predict(x, w, b, *geometry)
    assert got.shape == want.shape
    scale = max(np.abs(want).max(initial=0), 1)
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)
    if want.size > 8:
        assert (want == 0).any() and (want > 0).any()  # the ReLU both cut and passed


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3]])
def test_the_same_bits_on_any_thread_count_and_batch_split(case):
    x, w, b, geometry = make(case, np.float32)
    want = predict(x, w, b, *geometry, threads=1, twin="serial")
    for threads in (1, 2, 3, 16):
        np.testing.assert_array_equal(predict(x, w, b, *geometry, threads), want)
    # Each image alone (one per product) gives the bits it has among others
    for i in range(len(x)):
        np.testing.assert_array_equal(predict(x[i:i + 1], w, b, *geometry), want[i:i + 1])


def test_row_blocks_are_whole_images_or_each_threads_share():
    # (rows, rows per block) for (images, tiles, whether images may be split, threads):
    # whole images, PRODUCT_ROWS at most, or each thread's share of the rows where that is
    # smaller, rounded down to matmul's 4-row half tiles, if images may be split (where
    # there are products to share: more than one channel)
    assert winograd._row_blocks(1000, 25, True, 2) == (25_000, 250)
    assert winograd._row_blocks(3, 169, True, 2) == (507, 169)
    assert winograd._row_blocks(1, 25, True, 2) == (25, 12)  # cnn-keras's conv2, one image
    assert winograd._row_blocks(2, 25, True, 2) == (50, 24)  # a block across two images
    assert winograd._row_blocks(15, 25, True, 2) == (375, 188)  # fewer than 250 per thread
    assert winograd._row_blocks(1, 25, True, 1) == (25, 24)
    assert winograd._row_blocks(1, 169, True, 2) == (169, 84)
    assert winograd._row_blocks(1, 169, False, 2) == (169, 169)  # and its conv1: one channel
    assert winograd._row_blocks(1, 1, True, 16) == (1, 4)
    assert winograd._row_blocks(2, 0, True, 2) == (0, 1)  # no tile: still a step
    assert winograd._splits_images(32) and not winograd._splits_images(1)


@kernel
def _blocks(rows, block):
    return [winograd._block_rows(i, rows, block) for i in range(winograd._n_blocks(rows, block))]


def test_fewer_than_half_a_tile_left_over_join_the_last_block():
    assert _blocks(25, 12) == [(0, 12), (12, 25)]  # one image's conv2 on two threads: 12 + 13
    assert _blocks(28, 12) == [(0, 12), (12, 24), (24, 28)]  # four rows: a block of their own
    assert _blocks(25, 24) == [(0, 25)]
    assert _blocks(500, 250) == [(0, 250), (250, 500)]
    assert _blocks(3, 4) == [(0, 3)]  # fewer rows than a block
    assert _blocks(0, 1) == [(0, 0)]  # no rows: one empty block
    assert winograd._workers(25, 12, 16) == 2 and winograd._workers(25, 24, 2) == 1


def test_filters_are_transformed_again_when_the_weights_change():
    x, w, b, geometry = make(CASES[3], np.float32)
    U = np.empty(winograd.filters_shape(w.shape[1], w.shape[0]), w.dtype)
    seen = np.full_like(w, np.nan)
    assert winograd.transform_filters(U, seen, w)
    np.testing.assert_array_equal(seen, w)
    kept = U.copy()
    assert not winograd.transform_filters(U, seen, w)  # the same weights: U stays
    np.testing.assert_array_equal(U, kept)
    w[1, 2, 0, 1] += 1  # one weight moved (an optimizer step, a user's edit)
    assert winograd.transform_filters(U, seen, w)
    y = np.empty((len(x), len(w), geometry[0] // 2, geometry[1] // 2), np.float32)
    winograd.conv2d_relu_pool_winograd(y, x, U, b, *geometry[2:], 2)
    np.testing.assert_allclose(y, reference(x, w, b, *geometry), rtol=1e-5, atol=1e-5)
    w[0, 0, 0, 0] = np.nan  # never equal to itself: transformed on every call
    assert winograd.transform_filters(U, seen, w)
    assert winograd.transform_filters(U, seen, w)


def test_a_nan_weight_reaches_the_outputs_it_feeds():
    x, w, b, geometry = make(CASES[3], np.float64)
    w[2, 1, 1, 1] = np.nan
    y = predict(x, w, b, *geometry)
    assert np.isnan(y[:, 2]).all()
    np.testing.assert_allclose(np.delete(y, 2, axis=1),
                               np.delete(reference(x, w, b, *geometry), 2, axis=1),
                               rtol=1e-13, atol=1e-13)


def test_filters_shape_leaves_a_gap_between_points():
    C, F = 32, 64
    assert winograd.filters_shape(C, F) == (winograd.POINTS * (C * F + winograd.POINT_GAP),)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tiles", [(0, 25), (3, 17)])
def test_input_transform_point_by_point_has_the_bits_of_tile_by_tile(dtype, tiles):
    # Several channels take each point's row of channels in a loop of its own; the same
    # operations as the tile-by-tile transform, so the same bits, for any run of tiles
    image = np.random.default_rng(5).normal(0, 3, (12, 12, 7)).astype(dtype)
    by_tile, by_point = np.full((2, 16, 26, 7), np.nan, dtype)
    winograd._input_transform(by_tile, image, 5, *tiles)
    winograd._input_transform_by_point(by_point, image, 5, *tiles)
    n = tiles[1] - tiles[0]
    assert not np.isnan(by_point[:, :n]).any() and np.isnan(by_point[:, n:]).all()
    np.testing.assert_array_equal(by_point, by_tile)
