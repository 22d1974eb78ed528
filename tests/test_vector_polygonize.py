"""Blockwise polygonizing: exactly one valid polygon per connected region, whatever the block size.

Every result is checked against scipy.ndimage.label on the same pixels: polygon counts per class, areas,
and, by rasterizing the polygons back, that each polygon covers exactly the pixels of one region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features
from scipy import ndimage

from geoseg.vector.blocks import STRUCTURES, BlockGrid, label_regions
from geoseg.vector.polygonize import polygonize_raster

DATA = Path(__file__).parents[1].parent / "shared" / "data"
LABELS = DATA / "labeled"


def array_reader(classes: np.ndarray, valid: np.ndarray | None = None):
    def read(window):
        rows, cols = slice(window.row0, window.row1), slice(window.col0, window.col1)
        return classes[rows, cols], None if valid is None else valid[rows, cols]

    return read


def polygonize(classes, valid=None, block_size=64, connectivity=4):
    grid = BlockGrid(classes.shape[0], classes.shape[1], block_size)
    parts = list(polygonize_raster(array_reader(classes, valid), grid, connectivity))
    polygons = np.concatenate([p for p, _ in parts]) if parts else np.empty(0, object)
    values = np.concatenate([v for _, v in parts]) if parts else np.empty(0, np.int64)
    return polygons, values


def components(classes, valid, connectivity):
    """{class: number of connected regions} by scipy."""
    counts = {}
    for value in np.unique(classes if valid is None else classes[valid]):
        mask = classes == value if valid is None else (classes == value) & valid
        counts[int(value)] = ndimage.label(mask, structure=STRUCTURES[connectivity])[1]
    return counts


def assert_exact(classes, valid, polygons, values, connectivity):
    """Counts, areas, validity, no overlap, and each polygon = exactly one scipy region."""
    expected = components(classes, valid, connectivity)
    got = {int(v): int(c) for v, c in zip(*np.unique(values, return_counts=True), strict=True)}
    assert got == expected
    assert shapely.is_valid(polygons).all()
    kinds = set(shapely.get_type_id(polygons).tolist())
    if connectivity == 4:
        assert kinds <= {shapely.GeometryType.POLYGON}
    else:
        assert kinds <= {shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON}
    areas = shapely.area(polygons)
    for value in expected:
        pixels = (classes == value) if valid is None else (classes == value) & valid
        assert areas[values == value].sum() == pixels.sum()
    # rasterize back (pixel centres): every polygon covers exactly one region's pixels, nothing overlaps
    height, width = classes.shape
    ids = features.rasterize(
        zip(polygons, range(1, len(polygons) + 1), strict=True),
        out_shape=(height, width),
        dtype=np.int32,
        transform=rasterio.Affine.identity(),
    )
    labels, label_class = label_regions(classes, valid, connectivity)
    assert ((ids == 0) == (labels == 0)).all()
    pairs = np.unique(np.stack([ids[labels > 0], labels[labels > 0]]), axis=1)
    assert pairs.shape[1] == len(polygons) == len(label_class) - 1
    assert (values[pairs[0] - 1] == label_class[pairs[1]]).all()
    assert shapely.union_all(polygons).area == areas.sum()


def canonical(polygons, values):
    return sorted(zip(values.tolist(), shapely.to_wkt(shapely.normalize(polygons)).tolist(), strict=True))


def checkerboard(n):
    return (np.indices((n, n)).sum(axis=0) % 2).astype(np.uint8)


def rings(n):
    y, x = np.indices((n, n))
    return (np.maximum(abs(y - n // 2), abs(x - n // 2)) // 3 % 3).astype(np.uint8)


def enclosed(n):
    """A field (0) around a building (1) around a courtyard (2) around a tree (3): nested holes."""
    a = np.zeros((n, n), np.uint8)
    a[10:-10, 10:-10] = 1
    a[25:-25, 25:-25] = 2
    a[40:-40, 40:-40] = 3
    a[28, 28] = 3  # touches nothing of its class
    return a


def snake(n):
    """One 1-pixel-wide path zig-zagging through every block row: one region spanning many blocks."""
    a = np.zeros((n, n), np.uint8)
    for i, row in enumerate(range(1, n - 1, 4)):
        a[row, 1 : n - 1] = 1
        col = n - 2 if i % 2 == 0 else 1
        a[row : min(row + 5, n - 1), col] = 1
    return a


def noise(n, seed=0):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal((3, n, n)), 2.0, axes=(1, 2))
    return smooth.argmax(axis=0).astype(np.uint8)


PATTERNS = {
    "checkerboard": checkerboard(70),
    "rings": rings(90),
    "enclosed": enclosed(100),
    "snake": snake(97),
    "noise": noise(120),
}


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_one_polygon_per_region_on_synthetic_patterns_and_block_independent(name, connectivity):
    classes = PATTERNS[name]
    polygons, values = polygonize(classes, block_size=16, connectivity=connectivity)
    assert_exact(classes, None, polygons, values, connectivity)
    whole = polygonize(classes, block_size=4096, connectivity=connectivity)
    assert canonical(polygons, values) == canonical(*whole)


def test_checkerboard_counts_are_every_pixel_with_4_and_one_region_per_class_with_8():
    classes = checkerboard(40)
    _, values = polygonize(classes, block_size=16, connectivity=4)
    assert len(values) == 40 * 40
    polygons, values = polygonize(classes, block_size=16, connectivity=8)
    assert sorted(values.tolist()) == [0, 1]
    assert all(shapely.get_num_geometries(polygons) == 800)  # squares meeting only at corners


def test_region_enclosing_another_has_the_holes():
    classes = enclosed(100)
    polygons, values = polygonize(classes, block_size=32)
    building = polygons[values == 1]
    assert len(building) == 1
    assert shapely.get_num_interior_rings(building[0]) == 1
    assert building[0].area == 80 * 80 - 50 * 50


def test_nodata_pixels_give_no_polygon():
    classes = noise(80, seed=3)
    valid = np.ones(classes.shape, bool)
    valid[20:50, 30:70] = False
    valid[::7, :] = False
    polygons, values = polygonize(classes, valid, block_size=16)
    assert_exact(classes, valid, polygons, values, 4)
    assert shapely.union_all(polygons).area == valid.sum()


def test_snake_across_many_blocks_is_one_polygon():
    classes = snake(97)
    polygons, values = polygonize(classes, block_size=16)
    assert (values == 1).sum() == 1
    assert polygons[values == 1][0].area == (classes == 1).sum()


def test_regions_meeting_at_a_corner_across_a_block_corner():
    classes = np.zeros((32, 32), np.uint8)
    classes[15, 15] = 1
    classes[16, 16] = 1  # diagonal neighbours, in the blocks above-left and below-right of the corner
    for connectivity, count in ((4, 2), (8, 1)):
        polygons, values = polygonize(classes, block_size=16, connectivity=connectivity)
        assert (values == 1).sum() == count
        assert_exact(classes, None, polygons, values, connectivity)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_real_potsdam_label_raster(connectivity):
    path = LABELS / "potsdam" / "top_potsdam_2_10_label_0_0_512_512.tif"
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    with rasterio.open(path) as dataset:
        classes = dataset.read(1)
    polygons, values = polygonize(classes, block_size=64, connectivity=connectivity)
    assert_exact(classes, None, polygons, values, connectivity)
    assert canonical(polygons, values) == canonical(
        *polygonize(classes, block_size=512, connectivity=connectivity)
    )


@pytest.mark.parametrize("name", ["vaihingen/label_area1_0_0_512_512.png", "loveda/label_1.png"])
def test_real_png_labels(name):
    path = LABELS / name
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    with rasterio.open(path) as dataset:
        classes = dataset.read(1)
    polygons, values = polygonize(classes, block_size=128)
    assert_exact(classes, None, polygons, values, 4)
