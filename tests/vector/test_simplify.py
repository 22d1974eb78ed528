"""``vectorize --simplify`` keeps a coverage with every other option: the polygons tile exactly the pixels
that the unsimplified run covers (no overlaps, no gaps, no new holes), and none is under the minimum."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from helpers import write_geotiff
from pyogrio import raw
from rasterio.transform import from_origin
from scipy import ndimage

from geoseg.vector.vectorize import vectorize

NAIP = Path(__file__).parents[2].parent / "shared" / "data" / "variants" / "naip_rgbn_5m_nodata0.tif"
PIXEL = 10.0  # metres: a land-cover map's pixel, UTM 33N at its central meridian
MINIMUMS = ({}, {"min_area": 500.0}, {"min_pixels": 12})


def write_map(path: Path, classes: np.ndarray, nodata: int | None = 255) -> Path:
    transform = from_origin(500000, 5800000, PIXEL, PIXEL)
    return write_geotiff(path, classes, dtype="uint8", transform=transform, nodata=nodata)


def random_map(shape: tuple[int, int], classes: int, seed: int, nodata: float) -> np.ndarray:
    """Smooth random fields' argmax (a segmentation's look) with a share of scattered nodata pixels."""
    rng = np.random.default_rng(seed)
    fields = ndimage.gaussian_filter(rng.standard_normal((classes, *shape)), 1.3, axes=(1, 2))
    out = fields.argmax(axis=0).astype(np.uint8)
    out[rng.random(shape) < nodata] = 255
    return out


def read(path: Path) -> tuple[np.ndarray, dict]:
    meta, _, geometry, fields = raw.read(path)
    return shapely.from_wkb(geometry), dict(zip(meta["fields"], fields, strict=True))


def holes(geometry) -> int:
    return sum(len(part.interiors) for part in getattr(geometry, "geoms", [geometry]))


def assert_coverage(simplified: Path, plain: Path, minimum: dict, pixel_area: float) -> None:
    """``simplified`` tiles exactly what ``plain`` (the same run without --simplify) covers, and keeps every
    polygon of it, none under ``minimum``."""
    polygons, table = read(simplified)
    originals, plain_table = read(plain)
    assert len(polygons) == len(originals)
    assert sorted(table["class_id"]) == sorted(plain_table["class_id"])
    assert shapely.is_valid(polygons).all()
    tree = shapely.STRtree(polygons)
    left, right = tree.query(polygons, predicate="intersects")
    pairs = left < right
    overlaps = shapely.area(shapely.intersection(polygons[left[pairs]], polygons[right[pairs]]))
    assert overlaps.max(initial=0.0) < 1e-6 * pixel_area
    union, covered = shapely.union_all(polygons), shapely.union_all(originals)
    assert union.area == pytest.approx(covered.area, rel=1e-12)
    assert shapely.symmetric_difference(union, covered).area < 1e-6 * pixel_area
    assert shapely.area(polygons).sum() == pytest.approx(covered.area, rel=1e-12)
    assert holes(union) == holes(covered)
    if "min_area" in minimum:
        assert table["area"].min() >= minimum["min_area"]
    if "min_pixels" in minimum:
        assert shapely.area(polygons).min() >= minimum["min_pixels"] * pixel_area * (1 - 1e-12)


def assert_every_combination_keeps_a_coverage(
    path: Path, tmp_path: Path, simplify=(15.0, 40.0), minimums=MINIMUMS, splits=(0, 24)
) -> None:
    with rasterio.open(path) as dataset:
        pixel_area = abs(dataset.transform.determinant)
    for minimum, connectivity, split in itertools.product(minimums, (4, 8), splits):
        options = dict(minimum, connectivity=connectivity, split_polygons_at=split, overwrite=True)
        plain = tmp_path / "plain.fgb"
        vectorize(path, plain, **options)
        for tolerance in simplify:
            simplified = tmp_path / "simplified.fgb"
            vectorize(path, simplified, simplify=tolerance, **options)
            assert_coverage(simplified, plain, minimum, pixel_area)


@pytest.mark.parametrize(
    ("shape", "classes", "seed", "nodata"),
    [((40, 56), 4, 2, 0.0), ((64, 48), 6, 3, 0.02)],
)
@pytest.mark.slow
def test_simplified_polygons_tile_the_map_without_overlaps_gaps_or_small_polygons_with_every_option(
    tmp_path, shape, classes, seed, nodata
):
    # a polygon that simplification would shrink under the minimum keeps its pixel outline; before, one found
    # so in a later round kept an earlier round's outline, whose neighbours were simplified again around its
    # pixel edges: overlaps and gaps of a few pixels
    path = write_map(tmp_path / "map.tif", random_map(shape, classes, seed, nodata))
    assert_every_combination_keeps_a_coverage(path, tmp_path)


def naip_land_cover() -> tuple[np.ndarray, dict]:
    """A land-cover map of the real NAIP scene (5 m pixels) by thresholds: water (dark near-infrared), dense
    and sparse vegetation (NDVI), bright bare or built ground, other ground; 255 where it has no data."""
    with rasterio.open(NAIP) as dataset:
        red, green, blue, nir = dataset.read().astype(np.float32)
        valid = dataset.read_masks(1) > 0
        profile = {"crs": dataset.crs, "transform": dataset.transform}
    ndvi = (nir - red) / np.maximum(nir + red, 1)
    brightness = (red + green + blue) / 3
    classes = np.select([ndvi > 0.3, ndvi > 0.1], [2, 1], 0).astype(np.uint8)
    classes[(ndvi <= 0.1) & (brightness > np.percentile(brightness[valid], 90))] = 3
    classes[nir < np.percentile(nir[valid], 5)] = 4
    classes[~valid] = 255
    return classes, profile


def test_a_real_land_cover_map_simplified_keeps_a_coverage(tmp_path):
    # before: at 2 px tolerance and a 4 or 5 px minimum, neighbours overlapped by 1 or 2 pixels in this part
    # of it (rows and columns 160 and 480 on), as on the 10 m map at --simplify 20 --min-area 500
    classes, profile = naip_land_cover()
    crop = classes[160:320, 480:640]
    path = tmp_path / "landcover.tif"
    transform = profile["transform"] * rasterio.Affine.translation(480, 160)
    write_geotiff(path, crop, crs=profile["crs"], transform=transform, nodata=255)
    minimums = ({"min_area": 100.0}, {"min_pixels": 5})
    assert_every_combination_keeps_a_coverage(path, tmp_path, (10.0,), minimums, splits=(0,))
