"""geoseg.raster.grids: one decision "same grid" — CRSs by meaning, transforms within a fraction of a pixel,
GCPs and RPCs compared as what they are."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import rasterio
from helpers import write_geotiff
from pyproj import CRS as ProjCRS
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC
from rasterio.transform import from_origin

from geoseg.errors import GeosegWarning, InputError
from geoseg.raster.grids import check_same_grid, grid_difference, pixel_offset, placement, same_crs

UTM31 = "EPSG:32631"
TRANSFORM = from_origin(500000.0, 5800000.0, 0.5, 0.5)


def rpc(line_off: float = 50.0) -> RPC:
    zeros = [0.0] * 20
    return RPC(
        height_off=100.0,
        height_scale=500.0,
        lat_off=52.0,
        lat_scale=0.05,
        line_den_coeff=[1.0, *zeros[1:]],
        line_num_coeff=[0.0, 0.0, -1.0, *zeros[3:]],
        line_off=line_off,
        line_scale=50.0,
        long_off=5.0,
        long_scale=0.05,
        samp_den_coeff=[1.0, *zeros[1:]],
        samp_num_coeff=[0.0, 1.0, *zeros[2:]],
        samp_off=60.0,
        samp_scale=60.0,
    )


def gcps(shift: float = 0.0) -> list[GroundControlPoint]:
    corners = ((0, 0), (0, 12), (10, 0), (10, 12))
    return [GroundControlPoint(r, c, 500000.0 + c + shift, 5800000.0 - r) for r, c in corners]


def raster(path, width=12, height=10, *, crs=None, transform=None, gcps=None, rpcs=None):
    """A tiny GeoTIFF placed as asked (nothing given: pixel space; with ``gcps``, ``crs`` is theirs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        write_geotiff(
            path, np.zeros((height, width), np.uint8), crs=crs, transform=transform, gcps=gcps, rpcs=rpcs
        )
    return str(path)


def difference(a: str, b: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(a) as first, rasterio.open(b) as second:
            return grid_difference(first, second, "a.tif", "b.tif")


@pytest.mark.parametrize(
    "other",
    [
        "+proj=utm +zone=31 +datum=WGS84 +units=m +no_defs",  # PROJ string
        ProjCRS.from_epsg(32631).to_wkt("WKT1_ESRI"),  # another writer's WKT1, no authority code
        ProjCRS.from_epsg(32631).to_wkt("WKT2_2019"),
    ],
)
def test_the_same_crs_in_other_words_is_the_same_crs(other):
    assert same_crs(CRS.from_user_input(UTM31), CRS.from_user_input(other))


def test_axis_order_alone_does_not_make_another_crs():
    # EPSG:4326 is latitude-first by definition, a PROJ longlat string longitude-first; rasterio says differ
    assert CRS.from_epsg(4326) != CRS.from_string("+proj=longlat +datum=WGS84 +no_defs")
    assert same_crs(CRS.from_epsg(4326), CRS.from_string("+proj=longlat +datum=WGS84 +no_defs"))


def test_other_crs_are_other_crs():
    assert not same_crs(CRS.from_epsg(32631), CRS.from_epsg(32632))
    assert not same_crs(CRS.from_epsg(4326), CRS.from_epsg(4258))  # WGS 84 vs ETRS89: other datums
    assert not same_crs(CRS.from_epsg(4326), None)
    assert same_crs(None, None)


def test_rasters_in_one_crs_written_differently_share_a_grid(tmp_path):
    esri = ProjCRS.from_epsg(32631).to_wkt("WKT1_ESRI")
    a = raster(tmp_path / "a.tif", crs=UTM31, transform=TRANSFORM)
    b = raster(tmp_path / "b.tif", crs=CRS.from_wkt(esri), transform=TRANSFORM)
    assert difference(a, b) is None


def test_another_crs_is_refused_naming_both(tmp_path):
    a = raster(tmp_path / "a.tif", crs=UTM31, transform=TRANSFORM)
    b = raster(tmp_path / "b.tif", crs="EPSG:32632", transform=TRANSFORM)
    assert difference(a, b) == "a.tif is in EPSG:32631 but b.tif is in EPSG:32632; reproject one"


def test_a_one_pixel_shift_of_a_fine_degree_grid_is_refused(tmp_path):
    # 9e-7° pixels (~0.1 m): a shift by one whole pixel is 9e-7 in CRS units, under any absolute tolerance
    pixel = 9e-7
    grid = from_origin(5.0, 52.0, pixel, pixel)
    a = raster(tmp_path / "a.tif", crs="EPSG:4326", transform=grid)
    b = raster(tmp_path / "b.tif", crs="EPSG:4326", transform=from_origin(5.0 + pixel, 52.0, pixel, pixel))
    assert difference(a, b).startswith(
        "a.tif and b.tif have different transforms: the same pixel lies up to 1 px apart"
    )
    c = raster(
        tmp_path / "c.tif", crs="EPSG:4326", transform=from_origin(5.0 + pixel / 1000, 52.0, pixel, pixel)
    )
    assert difference(a, c) is None  # a thousandth of a pixel: rounding in another writer, the same grid


def test_a_pixel_size_that_drifts_by_one_pixel_over_the_raster_is_refused():
    a = from_origin(0.0, 0.0, 1.0, 1.0)
    b = from_origin(0.0, 0.0, 1.1, 1.0)  # the same origin, 10 % larger pixels: 1 px apart after 10
    assert pixel_offset(a, b, 10, 10) == pytest.approx(1.0)
    assert pixel_offset(a, a, 10, 10) == 0.0


def test_sizes_must_match(tmp_path):
    a = raster(tmp_path / "a.tif", crs=UTM31, transform=TRANSFORM)
    b = raster(tmp_path / "b.tif", width=13, crs=UTM31, transform=TRANSFORM)
    assert difference(a, b) == "a.tif is 12×10 pixels but b.tif is 13×10; both must cover the same grid"


def test_a_raster_in_pixel_space_matches_any_of_its_size(tmp_path):
    a = raster(tmp_path / "a.tif", crs=UTM31, transform=TRANSFORM)
    b = raster(tmp_path / "b.tif")
    assert placement(rasterio.open(b)) is None
    assert difference(a, b) is None


def test_gcps_are_compared_by_the_grid_they_fit(tmp_path):
    a = raster(tmp_path / "a.tif", crs=UTM31, gcps=gcps())
    same = raster(tmp_path / "same.tif", crs=UTM31, gcps=gcps())
    shifted = raster(tmp_path / "shifted.tif", crs=UTM31, gcps=gcps(shift=3.0))  # 3 m = 3 px
    other_crs = raster(tmp_path / "other.tif", crs="EPSG:32632", gcps=gcps())
    with rasterio.open(a) as src:
        assert placement(src) == "gcps"
    assert difference(a, same) is None
    assert difference(a, shifted).startswith(
        "a.tif and b.tif have different GCPs: the same pixel lies up to 3 px"
    )
    assert difference(a, other_crs) == "a.tif is in EPSG:32631 but b.tif is in EPSG:32632; reproject one"


def test_rpcs_are_compared_coefficient_by_coefficient(tmp_path):
    a = raster(tmp_path / "a.tif", rpcs=rpc())
    same = raster(tmp_path / "same.tif", rpcs=rpc())
    cropped = raster(tmp_path / "cropped.tif", rpcs=rpc(line_off=30.0))  # a crop 20 lines lower
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(a) as src:
            assert placement(src) == "rpcs"
    assert difference(a, same) is None
    assert (
        difference(a, cropped)
        == "a.tif and b.tif have different RPCs (line_off); both must cover the same grid"
    )


def test_rasters_placed_in_different_ways_are_refused_with_what_to_do(tmp_path):
    a = raster(tmp_path / "a.tif", crs=UTM31, transform=TRANSFORM)
    b = raster(tmp_path / "b.tif", rpcs=rpc())
    assert difference(a, b) == (
        "a.tif is placed by a transform but b.tif by RPCs, so they cannot be matched pixel for pixel; "
        "warp one onto the other's grid first (gdalwarp)"
    )


def test_check_same_grid_raises_the_reason(tmp_path):
    a = raster(tmp_path / "a.tif", crs=UTM31, transform=TRANSFORM)
    b = raster(tmp_path / "b.tif", crs=UTM31, transform=from_origin(500010.0, 5800000.0, 0.5, 0.5))
    with rasterio.open(a) as first, rasterio.open(b) as second:
        with pytest.raises(
            InputError, match=r"^a and b have different transforms: the same pixel lies up to 20 px"
        ):
            check_same_grid(first, second, "a", "b")
        check_same_grid(first, first, "a", "a")


# UTM zone 32N as older software writes it: the WGS 84 ellipsoid under an unnamed datum, no authority codes
UTM32_UNNAMED_DATUM = (
    'PROJCS["WGS 84 / UTM zone 32N",GEOGCS["Unknown datum based upon the WGS 84 ellipsoid",'
    'DATUM["Not_specified_based_on_WGS_84_spheroid",SPHEROID["WGS 84",6378137,298.257223563]],'
    'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",9],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1]]'
)


def test_a_datum_named_differently_without_a_shift_is_one_crs_with_one_warning(tmp_path):
    a = raster(tmp_path / "a.tif", crs="EPSG:32632", transform=TRANSFORM)
    b = raster(tmp_path / "b.tif", crs=CRS.from_wkt(UTM32_UNNAMED_DATUM), transform=TRANSFORM)
    with pytest.warns(GeosegWarning) as caught:
        assert difference(a, b) is None
    assert [str(w.message) for w in caught] == [
        "a.tif is in EPSG:32632 and b.tif in 'WGS 84 / UTM zone 32N', whose datums are named differently but "
        "lie on one another (no pixel moves by 0.01 m): taken as one CRS"
    ]


def test_a_datum_named_differently_still_compares_the_transforms(tmp_path):
    a = raster(tmp_path / "a.tif", crs="EPSG:32632", transform=TRANSFORM)
    shifted = from_origin(500000.5, 5800000.0, 0.5, 0.5)
    b = raster(tmp_path / "b.tif", crs=CRS.from_wkt(UTM32_UNNAMED_DATUM), transform=shifted)
    with pytest.warns(GeosegWarning):
        assert difference(a, b).startswith(
            "a.tif and b.tif have different transforms: the same pixel lies up to 1 px"
        )


def test_a_real_datum_shift_on_the_same_ellipsoid_and_projection_is_refused_in_metres(tmp_path):
    """GDA94 and GDA2020 (both GRS 1980, MGA zone 55): the continent moved 1.5 m between them."""
    a = raster(tmp_path / "a.tif", crs="EPSG:28355", transform=TRANSFORM)
    b = raster(tmp_path / "b.tif", crs="EPSG:7855", transform=TRANSFORM)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeosegWarning)
        reason = difference(a, b)
    # 1.53 m by PROJ's Helmert transformation; a local NTv2 grid may add a few centimetres
    assert re.fullmatch(
        r"a\.tif is in EPSG:28355 but b\.tif is in EPSG:7855: the same projection on another datum, where "
        r"the same pixel lies up to 1\.5\d m apart; reproject one",
        reason,
    )


def test_another_datum_on_another_ellipsoid_is_refused(tmp_path):
    a = raster(tmp_path / "a.tif", crs="EPSG:23032", transform=TRANSFORM)  # ED50 / UTM zone 32N
    b = raster(tmp_path / "b.tif", crs="EPSG:32632", transform=TRANSFORM)
    assert difference(a, b) == "a.tif is in EPSG:23032 but b.tif is in EPSG:32632; reproject one"
