"""The sieve: every region under the minimum is merged into a neighbour, gap-free, at any threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio import features
from scipy import ndimage

from geoseg.vector.blocks import label_regions
from geoseg.vector.sieve import sieve

LABELS = Path(__file__).parents[2].parent / "shared" / "data" / "labeled"


def noisy(n, seed, sigma=1.2, classes=4):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal((classes, n, n)), sigma, axes=(1, 2))
    return smooth.argmax(axis=0).astype(np.uint8)


def region_sizes(classes, valid, connectivity):
    labels, _ = label_regions(classes, valid, connectivity)
    return np.bincount(labels.ravel())[1:]


def test_island_goes_to_the_surrounding_class():
    classes = np.ones((20, 20), np.uint8)
    classes[5:7, 5:7] = 2  # 4 pixels
    classes[12, 12] = 3
    out, valid = sieve(classes, None, 5, 4)
    assert (out == 1).all() and valid is None


def test_small_region_takes_the_class_it_shares_the_longest_border_with():
    classes = np.zeros((20, 20), np.uint8)
    classes[:, 10:] = 1
    classes[8:11, 7:10] = 2  # 9 pixels: 3 pixel pairs with class 1 on its right, 9 with class 0
    assert (sieve(classes, None, 10, 4)[0][8:11, 7:10] == 0).all()
    classes[8:11, 7:10] = 0
    classes[8:11, 10:13] = 2  # now 3 pairs with class 0 on its left, 9 with class 1
    assert (sieve(classes, None, 10, 4)[0][8:11, 10:13] == 1).all()


def test_a_large_neighbour_wins_over_a_longer_border_with_a_small_one():
    classes = np.zeros((20, 20), np.uint8)
    classes[:, 10:] = 3
    classes[4:8, 10:13] = 2  # small (8 px), mostly against class 3
    classes[5:7, 10:12] = 1  # small (4 px): 6 pixel pairs with the small 2, 2 with the large 0 on its left
    out, _ = sieve(classes, None, 10, 4)
    assert (out[5:7, 10:12] == 0).all()  # not 3, where it would have gone through the 2
    assert (out[4, 10:13] == 3).all()


def test_speck_inside_a_thin_ring_follows_the_ring_into_the_field():
    classes = np.zeros((15, 15), np.uint8)
    classes[5:8, 5:8] = 1  # a ring of 8 pixels...
    classes[6, 6] = 2  # ...around a 1-pixel speck that touches nothing large
    out, _ = sieve(classes, None, 9, 4)
    assert (out == 0).all()


def test_a_region_alone_in_nodata_becomes_nodata_and_nodata_stays():
    classes = np.zeros((20, 20), np.uint8)
    valid = np.ones((20, 20), bool)
    valid[3:8, 3:8] = False
    classes[5, 5] = 4  # one valid pixel inside the nodata square: nothing to merge with
    valid[5, 5] = True
    classes[15, 15] = 2
    out, out_valid = sieve(classes, valid, 3, 4)
    assert not out_valid[5, 5]
    assert out[15, 15] == 0
    assert (out_valid == (valid & ~((np.arange(20)[:, None] == 5) & (np.arange(20) == 5)))).all()
    assert (out[~valid] == classes[~valid]).all()


def test_agrees_with_gdal_sieve_where_every_small_region_sits_inside_one_large_one():
    rng = np.random.default_rng(5)
    classes = np.repeat(np.repeat(rng.integers(0, 3, (4, 4)), 25, axis=0), 25, axis=1).astype(np.uint8)
    for row in range(0, 100, 25):
        for col in range(0, 100, 25):
            r, c = row + rng.integers(3, 19), col + rng.integers(3, 19)
            classes[r : r + rng.integers(1, 3), c : c + rng.integers(1, 3)] = rng.integers(3, 6)
    expected = features.sieve(classes, size=5, connectivity=4)
    assert (expected != classes).any()
    assert (sieve(classes, None, 5, 4)[0] == expected).all()


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("min_pixels", [2, 4, 10, 64, 400])
def test_no_region_under_the_minimum_remains_on_random_speckle(min_pixels, connectivity):
    # a 60 x 60 patch of pure noise (random classes per pixel) in a smooth map, with some nodata
    classes = noisy(120, seed=min_pixels)
    rng = np.random.default_rng(min_pixels)
    classes[30:90, 40:100] = rng.integers(0, 6, (60, 60))
    valid = np.ones(classes.shape, bool)
    valid[100:110, :50] = False
    out, out_valid = sieve(classes, valid, min_pixels, connectivity)
    assert region_sizes(out, out_valid, connectivity).min() >= min_pixels
    assert (out_valid == valid).all()  # every valid pixel keeps a class: gap-free
    assert set(np.unique(out[valid]).tolist()) <= set(np.unique(classes[valid]).tolist())
    assert (out[~valid] == classes[~valid]).all()


def test_a_whole_window_of_noise_becomes_clumps_of_at_least_the_minimum():
    classes = np.random.default_rng(0).integers(0, 5, (80, 80)).astype(np.uint8)
    out, valid = sieve(classes, None, 50, 4)
    sizes = region_sizes(out, valid, 4)
    assert valid is None and sizes.min() >= 50 and sizes.sum() == 80 * 80


def test_unchanged_when_every_region_is_large_enough():
    classes = np.zeros((10, 10), np.uint8)
    classes[:, 5:] = 1
    out, valid = sieve(classes, None, 50, 8)
    assert out is classes and valid is None


def test_real_label_raster():
    path = LABELS / "potsdam" / "top_potsdam_2_10_label_0_0_512_512.tif"
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    with rasterio.open(path) as dataset:
        classes = dataset.read(1, window=rasterio.windows.Window(0, 0, 256, 256))
    out, valid = sieve(classes, None, 50, 4)
    assert (out != classes).any()
    assert region_sizes(out, valid, 4).min() >= 50
