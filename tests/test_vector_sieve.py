"""The blockwise sieve: small regions handed to their neighbours, gap-free, the same for every block size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio import features
from scipy import ndimage

from geoseg.vector.blocks import BlockGrid, Window, label_regions
from geoseg.vector.sieve import halos, sieve_window, sieved_reader

LABELS = Path(__file__).parents[1].parent / "shared" / "data" / "labeled"


def sieve_array(classes, min_pixels, connectivity=4, block_size=16, valid=None):
    """Run the blockwise sieve over an in-memory array and stitch the blocks."""
    height, width = classes.shape

    def read(window):
        rows, cols = slice(window.row0, window.row1), slice(window.col0, window.col1)
        return classes[rows, cols], None if valid is None else valid[rows, cols]

    read_sieved = sieved_reader(read, height, width, min_pixels, connectivity)
    out = np.empty_like(classes)
    for _, _, window in BlockGrid(height, width, block_size):
        out[window.row0 : window.row1, window.col0 : window.col1] = read_sieved(window)[0]
    return out


def noisy(n, seed, sigma=1.2, classes=4):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal((classes, n, n)), sigma, axes=(1, 2))
    return smooth.argmax(axis=0).astype(np.uint8)


def small_regions_left(result, min_pixels, connectivity, valid=None):
    """Regions under the minimum that still touch a region at or above it (the sieve must leave none)."""
    labels, _ = label_regions(result, valid, connectivity)
    sizes = np.bincount(labels.ravel())
    large = sizes >= min_pixels
    large[0] = False
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    bad = 0
    for label in np.flatnonzero(~large)[1:]:
        mask = labels == label
        around = ndimage.binary_dilation(mask, structure) & ~mask
        bad += bool(large[labels[around]].any())
    return bad


def test_island_goes_to_the_surrounding_class():
    classes = np.ones((20, 20), np.uint8)
    classes[5:7, 5:7] = 2  # 4 pixels
    classes[12, 12] = 3
    out = sieve_array(classes, min_pixels=5)
    assert (out == 1).all()


def test_small_region_takes_the_class_it_shares_the_longest_border_with():
    classes = np.zeros((20, 20), np.uint8)
    classes[:, 10:] = 1
    classes[8:11, 7:10] = 2  # 9 pixels: 3 pixel pairs with class 1 on its right, 9 with class 0
    assert (sieve_array(classes, min_pixels=10)[8:11, 7:10] == 0).all()
    classes[8:11, 7:10] = 0
    classes[8:11, 10:13] = 2  # now 3 pairs with class 0 on its left, 9 with class 1
    assert (sieve_array(classes, min_pixels=10)[8:11, 10:13] == 1).all()


def test_speck_inside_a_thin_ring_follows_the_ring_into_the_field():
    classes = np.zeros((15, 15), np.uint8)
    classes[5:8, 5:8] = 1  # a ring of 8 pixels...
    classes[6, 6] = 2  # ...around a 1-pixel speck that touches nothing large
    out = sieve_array(classes, min_pixels=9)
    assert (out == 0).all()


def test_region_alone_in_nodata_keeps_its_class_and_nodata_stays():
    classes = np.zeros((20, 20), np.uint8)
    valid = np.ones((20, 20), bool)
    valid[3:8, 3:8] = False
    classes[5, 5] = 4  # one valid pixel inside the nodata square
    valid[5, 5] = True
    classes[15, 15] = 2
    out = sieve_array(classes, min_pixels=3, valid=valid)
    assert out[5, 5] == 4
    assert out[15, 15] == 0
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
    assert (sieve_array(classes, min_pixels=5, block_size=16) == expected).all()


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("min_pixels", [3, 12, 40])
def test_block_size_does_not_change_the_result_and_no_small_region_touches_a_large_one(
    min_pixels, connectivity
):
    classes = noisy(120, seed=min_pixels)
    blockwise = sieve_array(classes, min_pixels, connectivity, block_size=16)
    whole = sieve_array(classes, min_pixels, connectivity, block_size=4096)
    assert (blockwise == whole).all()
    assert (blockwise != classes).any()
    assert small_regions_left(blockwise, min_pixels, connectivity) == 0


def test_real_label_raster_is_block_independent():
    path = LABELS / "potsdam" / "top_potsdam_2_10_label_0_0_512_512.tif"
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    with rasterio.open(path) as dataset:
        classes = dataset.read(1, window=rasterio.windows.Window(0, 0, 256, 256))
    blockwise = sieve_array(classes, 50, block_size=64)
    assert (blockwise == sieve_array(classes, 50, block_size=256)).all()
    assert small_regions_left(blockwise, 50, 4) == 0


def chain_out_of_the_first_window():
    """A region S touching only small regions, one of which (X) touches a long thin region R.

    N = 20, so the first halo is 42 px: the block at rows/cols 32..47 sees R only up to column 89, where R
    has 15 pixels (under N), though R has 76: whether X (and so S) touches a large region is unknown until
    the window grows.
    """
    classes = np.zeros((160, 160), np.uint8)
    classes[40, 47:66] = 1  # S: 19 px, touches the block's last column
    classes[39, 56:75] = 2  # X: 19 px, 10 pixel pairs with S
    classes[39, 75:151] = 3  # R
    classes[39, 47:56] = 4  # S's other neighbours, all small, each with fewer pairs than X
    classes[41, 47:56] = 4
    classes[41, 56:65] = 5
    classes[41, 65] = 6
    classes[40, 46] = 6
    classes[40, 66] = 7
    return classes


def test_window_grows_when_a_chain_reaches_a_region_cut_by_its_edge():
    classes = chain_out_of_the_first_window()
    inner = Window(32, 32, 48, 48)
    first, _ = halos(20)
    outer = inner.grow(first, *classes.shape)
    window = classes[outer.row0 : outer.row1, outer.col0 : outer.col1]
    undecided = sieve_window(
        window, None, min_pixels=20, connectivity=4, outer=outer, inner=inner, raster_shape=classes.shape
    )
    assert undecided is None
    blockwise = sieve_array(classes, 20, block_size=16)
    assert (blockwise == sieve_array(classes, 20, block_size=4096)).all()
    assert blockwise[40, 50] == 0  # every neighbour of S joins the field, and S with them
