"""Polygonizing a window: exactly one valid polygon per connected region, in the raster's pixel grid.

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

from geoseg.vector.blocks import STRUCTURES, BlockGrid, Window, label_regions
from geoseg.vector.polygonize import polygonize_window

DATA = Path(__file__).parents[2].parent / "shared" / "data"
LABELS = DATA / "labeled"


def polygonize(classes, valid=None, connectivity=4):
    return polygonize_window(classes, valid, Window(0, 0, *classes.shape), connectivity)


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
def test_one_polygon_per_region_on_synthetic_patterns(name, connectivity):
    classes = PATTERNS[name]
    polygons, values = polygonize(classes, connectivity=connectivity)
    assert_exact(classes, None, polygons, values, connectivity)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_cells_of_a_grid_are_the_regions_of_each_cell_in_raster_pixel_coordinates(connectivity):
    classes = PATTERNS["noise"]
    for _, _, cell in BlockGrid(*classes.shape, 50):
        part = classes[cell.row0 : cell.row1, cell.col0 : cell.col1]
        polygons, values = polygonize_window(part, None, cell, connectivity)
        bounds = shapely.bounds(polygons)
        assert bounds[:, [0, 2]].min() == cell.col0 and bounds[:, [0, 2]].max() == cell.col1
        assert bounds[:, [1, 3]].min() == cell.row0 and bounds[:, [1, 3]].max() == cell.row1
        local = shapely.transform(polygons, lambda xy, c=cell: xy - [c.col0, c.row0])
        assert_exact(part, None, local, values, connectivity)


@pytest.mark.parametrize("dtype", [np.int8, np.uint32, np.int64])
def test_class_ids_of_any_integer_type_come_back_unchanged(dtype):
    info = np.iinfo(dtype)
    classes = np.where(rings(30) == 1, info.max, np.where(rings(30) == 2, info.min, 7)).astype(dtype)
    polygons, values = polygonize(classes)
    assert values.dtype == np.int64
    assert set(values.tolist()) == {int(info.max), int(info.min), 7}
    ids = {int(v): int(c) for v, c in zip(*np.unique(classes, return_counts=True), strict=True)}
    for value, pixels in ids.items():
        assert shapely.area(polygons[values == value]).sum() == pixels


def test_checkerboard_counts_are_every_pixel_with_4_and_one_region_per_class_with_8():
    classes = checkerboard(40)
    _, values = polygonize(classes, connectivity=4)
    assert len(values) == 40 * 40
    polygons, values = polygonize(classes, connectivity=8)
    assert sorted(values.tolist()) == [0, 1]
    assert all(shapely.get_num_geometries(polygons) == 800)  # squares meeting only at corners


def test_region_enclosing_another_has_the_holes():
    classes = enclosed(100)
    polygons, values = polygonize(classes)
    building = polygons[values == 1]
    assert len(building) == 1
    assert shapely.get_num_interior_rings(building[0]) == 1
    assert building[0].area == 80 * 80 - 50 * 50


def test_nodata_pixels_give_no_polygon():
    classes = noise(80, seed=3)
    valid = np.ones(classes.shape, bool)
    valid[20:50, 30:70] = False
    valid[::7, :] = False
    polygons, values = polygonize(classes, valid)
    assert_exact(classes, valid, polygons, values, 4)
    assert shapely.union_all(polygons).area == valid.sum()


def test_snake_is_one_polygon():
    classes = snake(97)
    polygons, values = polygonize(classes)
    assert (values == 1).sum() == 1
    assert polygons[values == 1][0].area == (classes == 1).sum()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_real_potsdam_label_raster(connectivity):
    path = LABELS / "potsdam" / "top_potsdam_2_10_label_0_0_512_512.tif"
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    with rasterio.open(path) as dataset:
        classes = dataset.read(1)
    polygons, values = polygonize(classes, connectivity=connectivity)
    assert_exact(classes, None, polygons, values, connectivity)


@pytest.mark.parametrize("name", ["vaihingen/label_area1_0_0_512_512.png", "loveda/label_1.png"])
def test_real_png_labels(name):
    path = LABELS / name
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    with rasterio.open(path) as dataset:
        classes = dataset.read(1)
    polygons, values = polygonize(classes)
    assert_exact(classes, None, polygons, values, 4)
