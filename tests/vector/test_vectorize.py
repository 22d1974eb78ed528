"""``geoseg.vector.vectorize.vectorize``: formats, CRS, attributes, areas, cleaning, and failing well."""

from __future__ import annotations

import json
import math
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from helpers import NORTH_UP, classes_and_transparency, write_geotiff
from pyogrio import raw
from rasterio.transform import from_origin
from scipy import integrate, ndimage

from geoseg.errors import GeosegWarning, InputError, OutputError
from geoseg.styles import data_layers
from geoseg.vector import vectorize as vectorize_module
from geoseg.vector.vectorize import vectorize

# reads name their layer: pyogrio's warning would mean a styled GeoPackage read by guessing its layer
pytestmark = pytest.mark.filterwarnings("error:More than one layer found")

POTSDAM = Path(__file__).parents[2].parent / "shared" / "data" / "labeled" / "potsdam"
POTSDAM_LABEL = POTSDAM / "top_potsdam_2_10_label_0_0_512_512.tif"
NAMES = ["field", "building", "tree", "water"]


PLACE = from_origin(366976.5, 5808562.6, 0.5, 0.5)


def write_raster(path, data, *, crs="EPSG:32633", transform=PLACE, **options):
    """``data`` on a 0.5 m UTM grid unless ``crs``/``transform`` say otherwise; ``options`` as
    write_geotiff's."""
    return write_geotiff(path, data, crs=crs, transform=transform, **options)


def texture(n=96, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal((classes, n, n)), 2.0, axes=(1, 2))
    return smooth.argmax(axis=0).astype(np.uint8)


def read_layer(path):
    (layer,) = data_layers(path)  # a styled GeoPackage also lists its layer_styles table
    meta, _, geometry, fields = raw.read(path, layer=layer)
    table = dict(zip(meta["fields"], fields, strict=True))
    return meta, shapely.from_wkb(geometry), table


def region_counts(classes, valid=None):
    counts = {}
    for value in np.unique(classes if valid is None else classes[valid]):
        mask = classes == value if valid is None else (classes == value) & valid
        counts[int(value)] = ndimage.label(mask)[1]
    return counts


def utm_areal_scale(x=366976.5, y=5808562.6):
    """How much larger than on the ground a map square of UTM 33N is there (PROJ's areal scale factor)."""
    lon, lat = pyproj.Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    return pyproj.Proj(32633).get_factors(lon, lat).areal_scale


@pytest.fixture
def named(tmp_path):
    classes = texture()
    classes[:10, :10] = 255  # nodata corner
    colors = [(i * 40, 0, 0) for i in range(len(NAMES))]
    return write_raster(tmp_path / "classes.tif", classes, nodata=255, classes=(NAMES, colors)), classes


def test_real_label_raster_to_geopackage_counts_areas_crs_and_attributes(tmp_path):
    if not POTSDAM_LABEL.exists():
        pytest.skip(f"shared data missing: {POTSDAM_LABEL}")
    with rasterio.open(POTSDAM_LABEL) as dataset:
        classes = dataset.read(1)
    out = tmp_path / "potsdam.gpkg"
    result = vectorize(POTSDAM_LABEL, out, split_polygons_at=0)
    expected = region_counts(classes)
    assert result.polygons == {str(k): v for k, v in expected.items()}
    meta, polygons, table = read_layer(out)
    assert meta["crs"] == "EPSG:32633"
    assert meta["geometry_type"] == "Polygon"
    assert list(meta["fields"]) == ["class_id", "class_name", "area"]
    assert shapely.is_valid(polygons).all()
    for value in expected:
        pixels = int((classes == value).sum())
        assert table["area"][table["class_id"] == value].sum() == pytest.approx(
            pixels * 0.05 * 0.05 / utm_areal_scale(), rel=1e-6
        )
    # the georeferencing is pixel-exact: the union is the raster's footprint
    assert shapely.union_all(polygons).equals(
        shapely.box(366976.5, 5808562.6 - 25.6, 366976.5 + 25.6, 5808562.6)
    )
    assert result.to_dict()["polygons"] == result.polygons


def test_split_grid_cuts_regions_exactly_at_its_lines_and_zero_never_cuts(tmp_path, named):
    path, classes = named
    valid = classes != 255
    whole = vectorize(path, tmp_path / "whole.gpkg", split_polygons_at=0)
    assert whole.polygons == {NAMES[k]: v for k, v in region_counts(classes, valid).items()}
    split = vectorize(path, tmp_path / "split.gpkg", split_polygons_at=40)
    expected: dict[str, int] = {}
    for row in range(0, 96, 40):
        for col in range(0, 96, 40):
            cell = (slice(row, row + 40), slice(col, col + 40))
            for k, v in region_counts(classes[cell], valid[cell]).items():
                expected[NAMES[k]] = expected.get(NAMES[k], 0) + v
    assert split.polygons == expected
    assert sum(split.polygons.values()) > sum(whole.polygons.values())
    _, polygons, _ = read_layer(tmp_path / "split.gpkg")
    # no polygon crosses a grid line (x = 366976.5 + 20 m, y = 5808562.6 - 20 m, ...)
    x0, y0 = 366976.5, 5808562.6
    minx, miny, maxx, maxy = shapely.bounds(polygons).T
    cell_col = np.floor((minx - x0) / 20 + 1e-9)
    cell_row = np.floor((y0 - maxy) / 20 + 1e-9)
    assert (np.floor((maxx - x0) / 20 - 1e-9) == cell_col).all()
    assert (np.floor((y0 - miny) / 20 - 1e-9) == cell_row).all()
    assert shapely.union_all(polygons).area == pytest.approx(valid.sum() * 0.25)


def test_class_names_from_the_raster_nodata_and_class_filter(tmp_path, named):
    path, classes = named
    valid = classes != 255
    result = vectorize(path, tmp_path / "all.gpkg")
    assert result.polygons == {NAMES[k]: v for k, v in region_counts(classes, valid).items()}
    _, polygons, table = read_layer(tmp_path / "all.gpkg")
    assert set(table["class_name"]) == {NAMES[k] for k in np.unique(classes[valid])}
    assert table["area"].sum() == pytest.approx(valid.sum() * 0.25 / utm_areal_scale(), rel=1e-6)
    nodata_corner = shapely.box(366976.5, 5808562.6 - 5, 366976.5 + 5, 5808562.6)
    assert shapely.area(shapely.intersection(polygons, nodata_corner)).max() == 0

    only = vectorize(path, tmp_path / "some.gpkg", classes=["Building", "3"])
    assert only.polygons == {
        "building": region_counts(classes, valid)[1],
        "water": region_counts(classes, valid)[3],
    }
    _, _, table = read_layer(tmp_path / "some.gpkg")
    assert set(table["class_id"].tolist()) == {1, 3}


def test_plain_ids_as_names_without_stored_names(tmp_path):
    path = write_raster(tmp_path / "c.tif", texture(40, seed=2))
    result = vectorize(path, tmp_path / "c.gpkg", classes=[2])
    assert list(result.polygons) == ["2"]
    assert set(read_layer(tmp_path / "c.gpkg")[2]["class_name"]) == {"2"}


def test_uint64_ids_keep_their_values_up_to_int64_max_and_larger_ones_are_refused(tmp_path):
    classes = np.zeros((20, 20), np.uint64)
    classes[5:10, 5:10] = 2**63 - 1
    classes[12:15, 0:3] = 2**40 + 1
    path = write_raster(tmp_path / "c.tif", classes)
    result = vectorize(path, tmp_path / "c.gpkg")
    assert result.polygons == {"0": 1, str(2**40 + 1): 1, str(2**63 - 1): 1}
    table = read_layer(tmp_path / "c.gpkg")[2]
    assert sorted(table["class_id"].tolist()) == [0, 2**40 + 1, 2**63 - 1]
    classes[0, 0] = 2**63 + 5  # was written as class_id -9223372036854775803
    path = write_raster(tmp_path / "big.tif", classes)
    with pytest.raises(InputError, match=r"holds class id 9223372036854775813, above 9223372036854775807"):
        vectorize(path, tmp_path / "big.gpkg")
    assert not (tmp_path / "big.gpkg").exists()


def test_shapefile_keeps_18_digit_ids_exact_and_refuses_longer_ones(tmp_path):
    classes = np.zeros((20, 20), np.int64)
    classes[5:10, 5:10] = 10**18 - 1
    classes[12:15, 0:3] = -(10**17 - 1)
    vectorize(write_raster(tmp_path / "c.tif", classes), tmp_path / "c.shp")
    table = read_layer(tmp_path / "c.shp")[2]
    assert table["class_id"].dtype == np.int64
    assert sorted(table["class_id"].tolist()) == [-(10**17 - 1), 0, 10**18 - 1]
    classes[0, 0], classes[19, 19] = (
        2**62 + 1,
        2**62 + 3,
    )  # both were read back as the real 4.611686018427388e18
    path = write_raster(tmp_path / "big.tif", classes)
    with pytest.raises(
        OutputError, match=r"class id 461168601842738790[57] has more digits than a Shapefile"
    ):
        vectorize(path, tmp_path / "big.shp")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.tif",
        "c.cpg",
        "c.dbf",
        "c.prj",
        "c.shp",
        "c.shx",
        "c.tif",
    ]
    vectorize(path, tmp_path / "big.gpkg")
    assert {2**62 + 1, 2**62 + 3} <= set(read_layer(tmp_path / "big.gpkg")[2]["class_id"].tolist())


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".shp", ".geojson"])
def test_every_ogr_format_opens_with_pyogrio_and_carries_the_right_crs(tmp_path, named, suffix):
    path, classes = named
    out = tmp_path / f"polygons{suffix}"
    result = vectorize(path, out)
    meta, polygons, table = read_layer(out)
    assert len(polygons) == sum(result.polygons.values())
    assert set(table["class_name"]) <= set(NAMES)
    if suffix == ".geojson":  # RFC 7946: WGS84 longitude/latitude
        assert meta["crs"] == "EPSG:4326"
        lon, lat = shapely.get_coordinates(polygons).T
        assert 13.0 < lon.min() < lon.max() < 13.1 and 52.4 < lat.min() < lat.max() < 52.5
    else:
        assert meta["crs"] == "EPSG:32633"
        assert shapely.union_all(polygons).area == pytest.approx((classes != 255).sum() * 0.25)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("west", [359.95, 540.5, -200.0])
def test_geojson_of_longitudes_outside_minus_180_180_has_every_geometry_at_the_same_place(tmp_path, west):
    # GDAL's RFC 7946 writer left every polygon east of 360 degrees empty (24 of 42 at 359.95..360.05)
    classes = texture(100, seed=8)
    transform = from_origin(west, 50, 0.001, 0.001)
    path = write_raster(tmp_path / "c.tif", classes, crs="EPSG:4326", transform=transform)
    vectorize(path, tmp_path / "c.gpkg")
    vectorize(path, tmp_path / "c.geojson")
    _, kept, kept_table = read_layer(tmp_path / "c.gpkg")
    _, polygons, table = read_layer(tmp_path / "c.geojson")
    assert not shapely.is_empty(polygons).any()
    turns = 360.0 * math.floor((west + 180) / 360)
    expected = shapely.transform(kept, lambda xy: xy - (turns, 0.0))
    assert shapely.equals_exact(
        shapely.normalize(polygons), shapely.normalize(expected), tolerance=1e-7
    ).all()
    np.testing.assert_array_equal(table["area"], kept_table["area"])


def test_geojson_keeps_the_raster_crs_when_asked(tmp_path, named):
    path, _ = named
    vectorize(path, tmp_path / "keep.geojson", keep_crs=True)
    meta, polygons, _ = read_layer(tmp_path / "keep.geojson")
    assert meta["crs"] == "EPSG:32633"
    assert shapely.get_coordinates(polygons)[:, 1].max() == pytest.approx(5808562.6)


def test_keep_crs_for_a_format_that_keeps_the_crs_anyway_writes_the_same_polygons(tmp_path, named):
    """Accepted, not refused: the caller asked for the raster's CRS and gets it (a script may pass it for
    every format); the output is what it is without the flag."""
    path, _ = named
    vectorize(path, tmp_path / "plain.gpkg")
    vectorize(path, tmp_path / "keep.gpkg", keep_crs=True)
    (meta, polygons, table), (kept_meta, kept, kept_table) = (
        read_layer(tmp_path / "plain.gpkg"),
        read_layer(tmp_path / "keep.gpkg"),
    )
    assert meta["crs"] == kept_meta["crs"] == "EPSG:32633"
    assert shapely.equals_exact(polygons, kept, tolerance=0).all()
    assert table.keys() == kept_table.keys()
    for column in table:
        np.testing.assert_array_equal(table[column], kept_table[column])


def test_geojson_refuses_to_keep_a_crs_it_cannot_name(tmp_path):
    # GeoJSON names a CRS only by its code: without one, readers would place these feet as degrees
    custom = (
        'PROJCS["custom LCC",GEOGCS["custom",DATUM["custom",SPHEROID["custom",6378200,298.3]],'
        'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Lambert_Conformal_Conic_2SP"],'
        'PARAMETER["standard_parallel_1",33.3],PARAMETER["standard_parallel_2",45.7],'
        'PARAMETER["latitude_of_origin",39.1],PARAMETER["central_meridian",-96.77],'
        'PARAMETER["false_easting",1234567.8],PARAMETER["false_northing",-765432.1],'
        'UNIT["US survey foot",0.304800609601219]]'
    )
    crs, transform = rasterio.CRS.from_wkt(custom), from_origin(1000, 2000, 0.5, 0.5)
    path = write_raster(tmp_path / "lcc.tif", texture(32), crs=crs, transform=transform)
    with pytest.raises(OutputError, match=r"keep\.geojson: GeoJSON can only name a CRS by its EPSG code"):
        vectorize(path, tmp_path / "keep.geojson", keep_crs=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcc.tif"]
    vectorize(path, tmp_path / "lonlat.geojson")  # RFC 7946 longitude/latitude is fine
    lon, lat = shapely.get_coordinates(read_layer(tmp_path / "lonlat.geojson")[1]).T
    assert -101.3 < lon.min() < lon.max() < -101.2 and 41.1 < lat.min() < lat.max() < 41.2
    vectorize(path, tmp_path / "keep.gpkg")
    assert rasterio.CRS.from_user_input(
        read_layer(tmp_path / "keep.gpkg")[0]["crs"]
    ) == rasterio.CRS.from_wkt(custom)


def test_a_local_engineering_crs_keeps_its_units_and_is_refused_only_by_geojson(tmp_path):
    site = 'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["US survey foot",0.304800609601219]]'
    classes = np.zeros((4, 5), np.uint8)
    path = write_raster(
        tmp_path / "site.tif", classes, crs=rasterio.CRS.from_wkt(site), transform=from_origin(0, 8, 2.0, 2.0)
    )
    vectorize(path, tmp_path / "site.gpkg")
    area = read_layer(tmp_path / "site.gpkg")[2]["area"][0]
    assert area == pytest.approx(20 * 4 * 0.30480060960121924**2, rel=1e-12)
    with pytest.raises(
        OutputError, match=r"site\.tif cannot be converted to WGS84 longitude/latitude for GeoJSON"
    ):
        vectorize(path, tmp_path / "site.geojson")
    with pytest.raises(OutputError, match=r"has none; write \.gpkg or \.fgb$"):
        vectorize(path, tmp_path / "site.geojson", keep_crs=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.gpkg", "site.tif"]


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".geojson"])
def test_a_raster_without_crs_gives_one_warning(tmp_path, suffix):
    path = write_raster(tmp_path / "plain.tif", texture(16), crs=None)
    with pytest.warns(GeosegWarning) as caught:
        vectorize(path, tmp_path / f"plain{suffix}")
    assert [str(w.message) for w in caught] == [
        f"{path}: has no CRS; areas are in square raster units and outputs carry no CRS"
        + (" (GeoJSON stays in raster coordinates, not longitude/latitude)" if suffix == ".geojson" else "")
    ]
    if suffix != ".geojson":  # GeoJSON readers assume WGS84 whatever the file says: hence the warning
        assert read_layer(tmp_path / f"plain{suffix}")[0]["crs"] is None


def test_geoparquet_has_geo_metadata_and_wkb(tmp_path, named):
    pq = pytest.importorskip("pyarrow.parquet")
    path, classes = named
    result = vectorize(path, tmp_path / "p.parquet", connectivity=8)
    table = pq.read_table(tmp_path / "p.parquet")
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["geometry_types"] == ["MultiPolygon"]
    assert geo["columns"]["geometry"]["crs"]["id"] == {"authority": "EPSG", "code": 32633}
    polygons = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    assert len(polygons) == sum(result.polygons.values())
    assert (shapely.get_type_id(polygons) == shapely.GeometryType.MULTIPOLYGON).all()
    assert table.column_names == ["class_id", "class_name", "area", "geometry"]


def test_eight_connectivity_gives_valid_multipolygons(tmp_path):
    classes = (np.indices((20, 20)).sum(axis=0) % 2).astype(np.uint8)
    result = vectorize(write_raster(tmp_path / "c.tif", classes), tmp_path / "c.gpkg", connectivity=8)
    assert result.polygons == {"0": 1, "1": 1}
    meta, polygons, _ = read_layer(tmp_path / "c.gpkg")
    assert meta["geometry_type"] == "MultiPolygon"
    assert shapely.is_valid(polygons).all()
    assert sorted(shapely.get_num_geometries(polygons).tolist()) == [200, 200]


def test_simplified_eight_connected_polygons_stay_valid_in_geographic_coordinates(tmp_path):
    # seed 7: simplified in pixel space the MultiPolygons are valid, but taken to 0.0001-degree coordinates
    # a part's vertex on another part's diagonal edge rounded across it (2 self-intersections before)
    classes = np.random.default_rng(7).integers(0, 4, (48, 48)).astype(np.uint8)
    path = write_raster(
        tmp_path / "c.tif", classes, crs="EPSG:4326", transform=from_origin(10, 70, 1e-4, 1e-4)
    )
    vectorize(path, tmp_path / "plain.gpkg", min_pixels=12, connectivity=8)
    vectorize(path, tmp_path / "simple.gpkg", min_pixels=12, simplify=10, connectivity=8)
    _, plain, _ = read_layer(tmp_path / "plain.gpkg")
    _, polygons, table = read_layer(tmp_path / "simple.gpkg")
    assert shapely.is_valid(polygons).all()
    assert shapely.get_num_coordinates(polygons).sum() < 0.8 * shapely.get_num_coordinates(plain).sum()
    assert shapely.area(polygons).sum() == pytest.approx(48 * 48 * 1e-8, rel=1e-9)
    assert shapely.union_all(polygons).area == pytest.approx(48 * 48 * 1e-8, rel=1e-9)  # no gaps, no overlaps
    assert shapely.area(polygons).min() >= 12 * 1e-8 * (1 - 1e-9)


def geodesic_area(crs, corners, edge_points=2000):
    """Reference: pyproj.Geod's area of a rectangle given in CRS coordinates, its edges densified in the CRS
    (straight pixel edges, not geodesics between the corners) and taken to the CRS's own ellipsoid."""
    source = pyproj.CRS.from_user_input(crs)
    geodetic = source.geodetic_crs
    ring = shapely.segmentize(shapely.box(*corners).exterior, (corners[2] - corners[0]) / edge_points)
    x, y = shapely.get_coordinates(ring).T
    lon, lat = pyproj.Transformer.from_crs(source, geodetic, always_xy=True).transform(x, y)
    degrees = math.degrees(geodetic.axis_info[0].unit_conversion_factor)
    ellipsoid = geodetic.ellipsoid
    geod = pyproj.Geod(a=ellipsoid.semi_major_metre, rf=ellipsoid.inverse_flattening)
    area, _ = geod.polygon_area_perimeter(np.asarray(lon) * degrees, np.asarray(lat) * degrees)
    return abs(area)


CUSTOM_LCC = (
    'PROJCS["custom LCC",GEOGCS["custom",DATUM["custom",SPHEROID["custom",6378200,298.3]],'
    'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Lambert_Conformal_Conic_2SP"],'
    'PARAMETER["standard_parallel_1",33.3],PARAMETER["standard_parallel_2",45.7],'
    'PARAMETER["latitude_of_origin",39.1],PARAMETER["central_meridian",-96.77],'
    'PARAMETER["false_easting",1234567.8],PARAMETER["false_northing",-765432.1],'
    'UNIT["US survey foot",0.304800609601219]]'
)


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        ("EPSG:3857", from_origin(1447153.0, 6800125.0, 10.0, 10.0)),  # 13 E, 52 N: Mercator 2.6x too large
        ("EPSG:4326", from_origin(13.0, 52.5, 1e-4, 1e-4)),
        ("EPSG:4326", from_origin(13.0, 62.0, 0.01, 0.01)),  # 6 x 4 degrees: every vertex transformed
        ("EPSG:2263", from_origin(1e6, 2e5, 2.0, 2.0)),  # US feet
        (CUSTOM_LCC, from_origin(1000, 2000, 5.0, 5.0)),  # custom ellipsoid, US feet
    ],
    ids=["3857", "4326", "4326-large", "2263-feet", "custom-wkt"],
)
def test_areas_are_geodesic_in_every_crs(tmp_path, crs, transform):
    # a rectangle and the rest of a 600 x 400 raster with it as a hole: polygons of 30 m to 700 km, so each
    # way of computing an area is checked (centroid, second moments, every vertex)
    classes = np.zeros((400, 600), np.uint8)
    classes[100:130, 200:240] = 1
    rio_crs = rasterio.CRS.from_user_input(crs)
    path = write_raster(tmp_path / "r.tif", classes, crs=rio_crs, transform=transform)
    vectorize(path, tmp_path / "r.gpkg")
    _, _, table = read_layer(tmp_path / "r.gpkg")
    area = dict(zip(table["class_id"].tolist(), table["area"].tolist(), strict=True))

    def world_box(col0, row0, col1, row1):
        (x0, y1), (x1, y0) = transform * (col0, row0), transform * (col1, row1)
        return (x0, y0, x1, y1)

    small = geodesic_area(crs, world_box(200, 100, 240, 130))
    whole = geodesic_area(crs, world_box(0, 0, 600, 400))
    assert area[1] == pytest.approx(small, rel=1e-7)
    assert area[0] == pytest.approx(whole - small, rel=1e-7)
    if crs == "EPSG:3857":  # the planar area would be cos(52 deg)^-2 = 2.63 times too large
        assert 40 * 30 * 100 / area[1] == pytest.approx(1 / math.cos(math.radians(52.0)) ** 2, rel=2e-3)


def ellipsoid_cell_area(lat0, lat1, dlon, a=6378137.0, f=1 / 298.257223563):
    """Independent reference: integrate M(phi) N(phi) cos(phi) over the cell (radii of curvature)."""
    e2 = f * (2 - f)

    def density(phi):
        w = 1 - e2 * math.sin(phi) ** 2
        return a * (1 - e2) / w**1.5 * a / math.sqrt(w) * math.cos(phi)

    value, _ = integrate.quad(density, math.radians(lat0), math.radians(lat1), epsabs=0, epsrel=1e-13)
    return value * math.radians(dlon)


def test_a_raster_round_the_globe_has_finite_areas_that_sum_to_the_ellipsoid(tmp_path):
    # the equal-area projection centred on (0, 0) has no image of (180, 0), a vertex of two polygons: their
    # areas were NaN (with numpy's 'invalid value' warning), and pyproj.Geod gives a ring round all
    # longitudes no area at all
    classes = texture(36, seed=3)[:18]
    path = write_raster(tmp_path / "c.tif", classes, crs="EPSG:4326", transform=from_origin(-180, 90, 10, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectorize(path, tmp_path / "c.gpkg")
    _, polygons, table = read_layer(tmp_path / "c.gpkg")
    assert np.isfinite(table["area"]).all()
    geod = pyproj.Geod(ellps="WGS84")
    e = math.sqrt(geod.es)
    ellipsoid = 2 * math.pi * geod.a**2 * (1 + (1 - e * e) / (2 * e) * math.log((1 + e) / (1 - e)))
    assert table["area"].sum() == pytest.approx(ellipsoid, rel=1e-9)  # 510,065,621.7 km²
    inside = shapely.bounds(polygons)[:, 2] < 180  # those away from 180 E agree with pyproj.Geod
    reference = [abs(geod.geometry_area_perimeter(shapely.segmentize(p, 0.01))[0]) for p in polygons[inside]]
    np.testing.assert_allclose(table["area"][inside], reference, rtol=1e-6)


def test_geographic_raster_area_is_the_sum_of_its_pixels_on_the_ellipsoid(tmp_path):
    classes = np.zeros((30, 40), np.uint8)
    classes[5:20, 10:30] = 1
    step = 1e-4
    transform = from_origin(13.0, 52.5, step, step)
    path = write_raster(tmp_path / "geo.tif", classes, crs="EPSG:4326", transform=transform)
    vectorize(path, tmp_path / "geo.gpkg")
    _, _, table = read_layer(tmp_path / "geo.gpkg")
    inner = table["area"][table["class_id"] == 1][0]
    expected = sum(
        ellipsoid_cell_area(52.5 - (r + 1) * step, 52.5 - r * step, 20 * step) for r in range(5, 20)
    )
    assert inner == pytest.approx(expected, rel=1e-8)
    whole = sum(ellipsoid_cell_area(52.5 - (r + 1) * step, 52.5 - r * step, 40 * step) for r in range(30))
    assert table["area"].sum() == pytest.approx(whole, rel=1e-8)


def test_geographic_areas_in_grads_are_converted_to_degrees(tmp_path):
    # NTF (Paris): longitude and latitude in grads (0.9 degree) on the Clarke 1880 (IGN) ellipsoid
    classes = np.zeros((10, 20), np.uint8)
    step, north = 1e-4, 52.5 / 0.9
    path = write_raster(
        tmp_path / "ntf.tif", classes, crs="EPSG:4807", transform=from_origin(2.0, north, step, step)
    )
    vectorize(path, tmp_path / "ntf.gpkg")
    area = read_layer(tmp_path / "ntf.gpkg")[2]["area"][0]
    clarke = (6378249.2, 1 / 293.4660212936269)
    degrees = [(north - (r + 1) * step) * 0.9 for r in range(10)]
    expected = sum(ellipsoid_cell_area(lat, lat + step * 0.9, 20 * step * 0.9, *clarke) for lat in degrees)
    assert area == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("batch", [10**9, 200])
def test_simplified_polygons_still_tile_the_valid_area(tmp_path, monkeypatch, batch):
    monkeypatch.setattr(vectorize_module, "BATCH_VERTICES", batch)  # 200: many batches, fixed batch edges
    classes = texture(120, seed=4)
    classes[40:60, 0:30] = 255
    path = write_raster(tmp_path / "c.tif", classes, nodata=255, transform=from_origin(0, 120, 1.0, 1.0))
    plain = vectorize(path, tmp_path / "plain.gpkg", split_polygons_at=32)
    simple = vectorize(path, tmp_path / "simple.gpkg", simplify=2.0, split_polygons_at=32)
    assert simple.polygons == plain.polygons
    _, polygons, table = read_layer(tmp_path / "simple.gpkg")
    _, originals, _ = read_layer(tmp_path / "plain.gpkg")
    assert shapely.is_valid(polygons).all()
    assert shapely.get_num_coordinates(polygons).sum() < 0.8 * shapely.get_num_coordinates(originals).sum()
    union = shapely.union_all(polygons)
    valid_area = float((classes != 255).sum())
    assert union.area == pytest.approx(valid_area, rel=1e-12)
    assert shapely.area(polygons).sum() == pytest.approx(valid_area, rel=1e-12)  # so no overlaps
    tree = shapely.STRtree(polygons)
    left, right = tree.query(polygons, predicate="intersects")
    pairs = left < right
    overlaps = shapely.area(shapely.intersection(polygons[left[pairs]], polygons[right[pairs]]))
    assert overlaps.max() < 1e-9
    scale = table["area"] / shapely.area(polygons)  # true areas: UTM's scale factor far from its meridian
    assert scale == pytest.approx(scale[0], rel=1e-4)


def test_min_pixels_removes_small_regions_and_keeps_the_map_gap_free(tmp_path):
    classes = texture(120, seed=6)
    path = write_raster(tmp_path / "c.tif", classes, transform=from_origin(0, 120, 1.0, 1.0))
    before = vectorize(path, tmp_path / "a.gpkg")
    after = vectorize(path, tmp_path / "b.gpkg", min_pixels=30)
    assert sum(after.polygons.values()) < sum(before.polygons.values())
    _, polygons, _ = read_layer(tmp_path / "b.gpkg")
    assert shapely.area(polygons).min() >= 30
    assert shapely.area(polygons).sum() == 120 * 120


def test_non_integer_raster_is_refused(tmp_path):
    path = write_raster(tmp_path / "f.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="float32 values; vectorize needs an integer class raster"):
        vectorize(path, tmp_path / "f.gpkg")


def test_a_class_band_with_an_alpha_band_is_vectorized_with_the_alpha_as_its_mask(tmp_path):
    from rasterio.enums import ColorInterp

    classes = texture(40, seed=5)
    alpha = np.full_like(classes, 255)
    alpha[:10] = 0
    path = write_raster(tmp_path / "c.tif", np.stack([classes, alpha]))  # was refused: "has 2 bands"
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.gray, ColorInterp.alpha]
    result = vectorize(path, tmp_path / "c.gpkg")
    _, polygons, table = read_layer(tmp_path / "c.gpkg")
    valid = np.ones(classes.shape, bool)
    valid[:10] = False
    assert result.polygons == {str(k): v for k, v in region_counts(classes, valid).items()}
    assert shapely.union_all(polygons).area == pytest.approx(30 * 40 * 0.25)
    assert shapely.union_all(polygons).bounds[3] == pytest.approx(5808562.6 - 10 * 0.5)


def test_multi_band_raster_is_refused(tmp_path):
    path = write_raster(tmp_path / "m.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="has 3 bands; vectorize needs a single-band class raster"):
        vectorize(path, tmp_path / "m.gpkg")


def test_unknown_class_name_lists_the_known_ones(tmp_path, named):
    path, _ = named
    with pytest.raises(InputError, match="unknown class 'road'; class names: field, building, tree, water"):
        vectorize(path, tmp_path / "x.gpkg", classes=["road"])
    assert not (tmp_path / "x.gpkg").exists()


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".parquet"])
def test_an_output_that_cannot_be_written_is_one_line_naming_it_not_the_temporary_file(
    tmp_path, named, monkeypatch, suffix
):
    import pyarrow.parquet as pq
    from pyogrio.errors import DataSourceError

    def read_only(path, *args, **kwargs):  # as on a read-only or full file system
        if suffix == ".parquet":
            raise OSError(f"[Errno 30] Failed to open local file '{path}'. Detail: [errno 30] Read-only")
        raise DataSourceError(f"sqlite3_open({path}) failed: unable to open database file")

    monkeypatch.setattr(raw, "write", read_only)
    monkeypatch.setattr(pq, "ParquetWriter", read_only)
    output = tmp_path / f"out{suffix}"
    with pytest.raises(OutputError) as error:
        vectorize(named[0], output)
    assert str(error.value).startswith(f"{output}: cannot write it in {tmp_path} (")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif"]


def test_a_shapefile_side_car_left_alone_needs_overwrite_too(tmp_path, named):
    table = tmp_path / "out.dbf"  # no out.shp: vectorize replaced it silently before
    table.write_bytes(b"someone's table")
    with pytest.raises(OutputError, match=r"out.dbf: output exists; pass overwrite=True"):
        vectorize(named[0], tmp_path / "out.shp")
    assert table.read_bytes() == b"someone's table"
    assert not (tmp_path / "out.shp").exists()
    vectorize(named[0], tmp_path / "out.shp", overwrite=True)
    assert len(read_layer(tmp_path / "out.shp")[1]) > 0


def test_existing_output_needs_overwrite_and_is_left_alone(tmp_path, named):
    path, _ = named
    out = tmp_path / "x.gpkg"
    out.write_text("keep me")
    with pytest.raises(OutputError, match="output exists; pass overwrite=True"):
        vectorize(path, out)
    assert out.read_text() == "keep me"
    result = vectorize(path, out, overwrite=True)
    assert (
        pyogrio.read_info(out, layer="x")["features"]
        == sum(result.polygons.values())
        == sum(region_counts(named[1], named[1] != 255).values())
    )


def test_a_raster_that_breaks_while_reading_is_one_line_naming_it(tmp_path):
    path = write_raster(tmp_path / "whole.tif", texture(256), tiled=True, blockxsize=64, blockysize=64)
    whole = path.read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"cut\.tif: read failed \(") as caught:
        vectorize(tmp_path / "cut.tif", tmp_path / "cut.gpkg", split_polygons_at=64)
    assert "See previous exception" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif", "whole.tif"]


def test_unknown_suffix_is_refused_before_any_work(tmp_path, named):
    path, _ = named
    with pytest.raises(OutputError, match=r"unknown output format '\.csv'; use one of \.gpkg, \.fgb"):
        vectorize(path, tmp_path / "x.csv")


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".fgb"])
def test_interrupt_leaves_nothing_behind(tmp_path, named, suffix):
    path, _ = named
    folder = tmp_path / "out"
    folder.mkdir()
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vectorize(path, folder / f"x{suffix}", split_polygons_at=16, progress=interrupt)
    assert calls == [1, 2, 3]
    assert list(folder.iterdir()) == []


def gcps():
    from rasterio.control import GroundControlPoint

    return [
        GroundControlPoint(0, 0, 13.0, 52.5),
        GroundControlPoint(0, 16, 13.0, 52.49),
        GroundControlPoint(16, 0, 13.01, 52.5),
        GroundControlPoint(16, 16, 13.01, 52.49),
    ]


def write_placed(path, crs=None, **placement):
    """A raster without a geotransform, placed by ``placement`` (``gcps``, ``rpcs``) or by nothing."""
    return write_geotiff(path, texture(16), crs=crs, transform=None, **placement)


def test_a_raster_placed_by_gcps_is_refused_saying_to_warp_it(tmp_path):
    path = write_placed(tmp_path / "gcps.tif", gcps=gcps(), crs="EPSG:4326")
    with pytest.raises(InputError) as caught:
        vectorize(path, tmp_path / "gcps.gpkg")
    assert str(caught.value) == (
        f"{path}: is placed by ground control points (GCPs), not by a geotransform; warp it onto a map grid "
        "first (gdalwarp -t_srs <CRS> gcps.tif warped.tif) to vectorize it"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gcps.tif"]


def rpcs_near_berlin():
    from rasterio.rpc import RPC

    return RPC(
        height_off=50,
        height_scale=500,
        lat_off=52.5,
        lat_scale=0.01,
        line_den_coeff=[1] + [0] * 19,
        line_num_coeff=[0, 0, -1] + [0] * 17,
        line_off=8,
        line_scale=8,
        long_off=13.0,
        long_scale=0.01,
        samp_den_coeff=[1] + [0] * 19,
        samp_num_coeff=[0, 1] + [0] * 18,
        samp_off=8,
        samp_scale=8,
    )


def test_a_raster_placed_by_rpcs_is_refused_saying_to_warp_it(tmp_path):
    path = write_placed(tmp_path / "rpcs.tif", rpcs=rpcs_near_berlin())
    with pytest.raises(
        InputError, match=r"rpcs\.tif: is placed by RPCs, not by a geotransform; .*gdalwarp -rpc"
    ):
        vectorize(path, tmp_path / "rpcs.gpkg")


def test_a_vrt_with_an_srs_an_identity_geotransform_and_gcps_is_refused(tmp_path):
    # GDAL reports its identity geotransform with the SRS: vectorized as is, the polygons would sit in
    # pixel units labelled EPSG:32633, hundreds of kilometres from the scene
    write_raster(tmp_path / "src.tif", texture(16), crs=None, transform=rasterio.Affine.identity())
    points = "".join(
        f'<GCP Id="{i}" Pixel="{p.col}" Line="{p.row}" X="{p.x}" Y="{p.y}"/>' for i, p in enumerate(gcps())
    )
    vrt = tmp_path / "scene.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="16" rasterYSize="16"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>0, 1, 0, 0, 0, 1</GeoTransform>"
        f'<GCPList Projection="EPSG:4326">{points}</GCPList>'
        f'<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="1">src.tif'
        f"</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    with rasterio.open(vrt) as dataset:
        assert dataset.crs == "EPSG:32633" and dataset.transform.is_identity and dataset.gcps[0]
    with pytest.raises(InputError, match=r"scene\.vrt: is placed by ground control points \(GCPs\)"):
        vectorize(vrt, tmp_path / "scene.gpkg")


def test_a_raster_without_any_georeferencing_gives_one_warning_in_geoseg_words(tmp_path):
    path = write_placed(tmp_path / "bare.tif")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectorize(path, tmp_path / "bare.gpkg")
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            GeosegWarning,
            f"{path}: has no georeferencing (no CRS, geotransform, GCPs or RPCs); polygons are in pixel "
            "coordinates, areas in square pixels, and outputs carry no CRS",
        )
    ]
    _, polygons, table = read_layer(tmp_path / "bare.gpkg")
    assert table["area"].sum() == 256
    assert shapely.union_all(polygons).equals(shapely.box(0, 0, 16, 16))


def speckled(seed, n=120):
    """A smooth map with a 60 x 60 patch of random classes (1 pixel each) and a band of nodata."""
    classes = texture(n, seed=seed)
    classes[20:80, 30:90] = np.random.default_rng(seed).integers(0, 4, (60, 60))
    classes[100:104, :] = 255
    return classes


@pytest.mark.parametrize("simplify", [None, 3.0])
@pytest.mark.parametrize(("min_area", "split"), [(10.0, 0), (10.0, 32), (64.0, 50), (400.0, 0), (400.0, 64)])
def test_no_polygon_under_min_area_on_speckle_at_any_threshold_and_split(tmp_path, min_area, split, simplify):
    # 1 m pixels in EPSG:4326 terms near 60 N: the true pixel area changes by 0.2 % across the raster
    classes = speckled(int(min_area) + split)
    transform = from_origin(10.0, 60.0, 1.8e-5, 9e-6)
    path = write_raster(tmp_path / "s.tif", classes, crs="EPSG:4326", transform=transform, nodata=255)
    out = tmp_path / "s.gpkg"
    vectorize(path, out, min_area=min_area, simplify=simplify, split_polygons_at=split)
    _, polygons, table = read_layer(out)
    assert table["area"].min() >= min_area
    assert shapely.is_valid(polygons).all()
    # gap-free: together the polygons still cover every valid pixel (the ellipsoid's area of it)
    everything = vectorize(path, tmp_path / "all.gpkg", split_polygons_at=split)
    assert sum(everything.polygons.values()) > len(polygons)
    assert table["area"].sum() == pytest.approx(read_layer(tmp_path / "all.gpkg")[2]["area"].sum(), rel=1e-7)


def test_simplify_keeps_the_pixel_outline_of_a_polygon_it_would_shrink_under_min_pixels(tmp_path):
    classes = np.zeros((40, 40), np.uint8)
    classes[10:30, 19:21] = 1  # a 2-pixel-wide strip of 40 px: simplified by 3 px it would collapse
    classes[5:35, 30:33] = 2
    path = write_raster(tmp_path / "c.tif", classes, transform=from_origin(0, 40, 1.0, 1.0))
    vectorize(path, tmp_path / "c.gpkg", min_pixels=40, simplify=3.0 * 0.9996)
    _, polygons, table = read_layer(tmp_path / "c.gpkg")
    strip = polygons[table["class_id"] == 1][0]
    assert strip.equals(shapely.box(19, 10, 21, 30))
    assert shapely.area(polygons).min() >= 40


@pytest.mark.slow
def test_memory_stays_flat_when_one_region_spans_the_scene(tmp_path, monkeypatch):
    # a background class touching every cell, with many holes: peak Python memory (numpy included) of the
    # whole run at 256^2 and 1024^2 pixels, 16 times the area, with 128-pixel cells and small write batches
    monkeypatch.setattr(vectorize_module, "BATCH_VERTICES", 5000)
    peaks = {}
    for n in (256, 1024):
        classes = np.zeros((n, n), np.uint8)
        rows, cols = np.indices((n, n))
        classes[(rows % 8 < 4) & (cols % 8 < 4)] = 1
        classes[(rows % 32 == 28) & (cols % 32 < 28)] = 2
        path = write_raster(tmp_path / f"{n}.tif", classes, transform=from_origin(0, n, 1.0, 1.0))
        vectorize(path, tmp_path / "warm-up.gpkg", split_polygons_at=128, overwrite=True)  # imports, caches
        tracemalloc.start()
        vectorize(path, tmp_path / f"{n}.gpkg", split_polygons_at=128)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[1024] < 1.5 * peaks[256]


def test_predict_vectorize_refuses_an_rpc_scene_before_any_inference(tmp_path):
    from helpers import PixelNet, write_scene

    from geoseg.api import predict
    from geoseg.model.card import ClassInfo, ModelCard

    scene = tmp_path / "rpc.tif"
    write_scene(scene, width=64, height=64, rpcs=rpcs_near_berlin())
    card = ModelCard(
        classes=[ClassInfo(f"c{i}", (i, i, i)) for i in range(6)],
        bands=["red", "green", "blue"],
        backbone="resnet18",
        tile_size=64,
        overlap=16,
    )

    class Untouchable(PixelNet):
        def forward(self, x):
            raise AssertionError("no tile may be computed")

    with pytest.raises(InputError, match=r"rpc\.tif: is placed by RPCs, not by a geotransform; warp it"):
        predict([scene], tmp_path / "out.tif", model=Untouchable(), card=card, vectorize=tmp_path / "p.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rpc.tif"]


def test_vectorize_refuses_to_write_over_its_input_raster_geopackage(tmp_path):
    """A GeoPackage holds rasters too: ``vectorize classes.gpkg -o classes.gpkg -f`` replaced the class
    raster it was reading by its polygons."""
    from geoseg.errors import OutputError
    from geoseg.vector.vectorize import vectorize

    classes, _ = classes_and_transparency()
    source = write_geotiff(tmp_path / "classes.gpkg", classes[None].astype(np.uint16), driver="GPKG")
    before = source.read_bytes()

    with pytest.raises(OutputError, match="is also an input"):
        vectorize(source, source, overwrite=True)

    assert source.read_bytes() == before


@pytest.mark.parametrize("north_up", [True, False], ids=["north-up", "south-up"])
def test_polygon_rings_have_one_orientation_whatever_the_transform(tmp_path, north_up):
    """A south-up raster's polygons came out with clockwise exterior rings and counter-clockwise holes, the
    reverse of a north-up raster's (and of GeoJSON's RFC 7946 rule), so the orientation depended on how the
    raster was stored."""
    from pyogrio.raw import read

    from geoseg.vector.vectorize import vectorize

    classes = np.zeros((1, 12, 12), np.uint8)
    classes[0, 4:8, 4:8] = 1  # a hole in class 0
    transform = NORTH_UP if north_up else Affine(0.5, 0.0, 400000.0, 0.0, 0.5, 5800000.0)
    source = write_geotiff(tmp_path / "classes.tif", classes, transform=transform)

    vectorize(source, tmp_path / "p.gpkg")

    _, _, wkb, fields = read(tmp_path / "p.gpkg", return_fids=True)
    polygons = dict(zip(fields[0].tolist(), shapely.from_wkb(wkb), strict=True))
    assert [polygons[c].exterior.is_ccw for c in (0, 1)] == [True, True]
    assert [ring.is_ccw for ring in polygons[0].interiors] == [False]
    assert polygons[0].area == 144 * 0.25 - 16 * 0.25
