"""``geoseg info`` describes rasters (grid, bands, masks) and checkpoints; ``--version`` works."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import set_tiff_compression_tag, write_geotiff
from rasterio.transform import from_origin

from geoseg import __version__
from geoseg.cli.main import cli

GEOREF = dict(crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5))


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"geoseg, version {__version__}"


def test_info_json_reports_the_raster_grid_exactly(runner, shared_data):
    path = shared_data / "variants" / "naip_rgbn_5m_nodata0.tif"
    result = runner.invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    with rasterio.open(path) as src:
        assert described["width"] == src.width == 934
        assert described["height"] == src.height == 723
        assert described["transform"] == list(src.transform)[:6]
    assert described["crs"] == "EPSG:26914"
    assert described["count"] == 4
    assert described["nodata"] == 0
    assert described["masks"] == ["nodata"] * 4
    assert described["block_shape"] == [[512, 512]]
    assert described["overviews"] == [2]


def test_info_shows_the_alpha_band_as_a_mask(runner, shared_data):
    result = runner.invoke(
        cli, ["info", str(shared_data / "variants" / "colorado_hro_0p15m_alpha.tif"), "--json"]
    )
    described = json.loads(result.output)
    assert described["bands"][3]["colorinterp"] == "alpha"
    assert described["masks"][0] == "per_dataset+alpha"


def test_info_table_names_the_crs_and_size(runner, shared_data):
    result = runner.invoke(cli, ["info", str(shared_data / "aerial" / "netherlands_0p25m_epsg28992.tif")])
    assert result.exit_code == 0, result.output
    assert "EPSG:28992" in result.output
    assert "1000" in result.output


def test_info_on_a_missing_file_is_one_line_exit_1(runner, tmp_path):
    result = runner.invoke(cli, ["info", str(tmp_path / "nothing.tif")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'nothing.tif'}: file not found"


def test_info_on_a_file_that_is_neither_raster_nor_checkpoint(runner, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just words")
    result = runner.invoke(cli, ["info", str(path)])
    assert result.exit_code == 1
    assert "neither a checkpoint nor a raster" in result.output
    assert "Traceback" not in result.output


def _refuse_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


@pytest.mark.parametrize("nodata, written", [(float("nan"), "nan"), (float("inf"), "inf"), (-np.inf, "-inf")])
def test_info_json_is_strict_json_for_non_finite_nodata(runner, tmp_path, nodata, written):
    path = tmp_path / "dem.tif"
    write_geotiff(path, np.zeros((1, 4, 4), np.float32), nodata=nodata, **GEOREF)
    result = runner.invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout, parse_constant=_refuse_constant)
    assert described["nodata"] == written
    assert described["masks"] == ["nodata"]


@pytest.mark.parametrize("code, name", [(32766, "NEXT"), (32809, "THUNDERSCAN"), (34676, "SGILOG")])
def test_info_reports_compressions_that_rasterio_has_no_name_for(runner, tmp_path, code, name):
    path = tmp_path / "old.tif"
    write_geotiff(path, np.zeros((1, 8, 8), np.uint8), **GEOREF)
    set_tiff_compression_tag(path, code)
    result = runner.invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compression"] == name
    table = runner.invoke(cli, ["info", str(path)])
    assert table.exit_code == 0 and name in table.output


def test_info_on_a_raster_without_georeferencing_speaks_only_in_its_own_words(runner, tmp_path):
    path = tmp_path / "photo.tif"
    write_geotiff(path, np.zeros((3, 8, 8), np.uint8), crs=None, transform=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught] == []
    assert result.stderr == ""
    described = json.loads(result.stdout)
    assert (described["crs"], described["transform"]) == (None, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def _placed_elsewhere(path, *, gcps=None, rpcs=None):
    """An 8×6 raster placed only by GCPs or RPCs (GDAL reports an identity transform for it)."""
    points, crs = gcps if gcps is not None else (None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        write_geotiff(path, np.zeros((1, 6, 8), np.uint8), crs=crs, transform=None, gcps=points, rpcs=rpcs)
    return str(path)


def test_info_reports_gcps_instead_of_pixel_bounds(runner, tmp_path):
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    points = [
        GroundControlPoint(r, c, 630000.0 + c, 5800000.0 - r) for r, c in ((0, 0), (0, 8), (6, 0), (6, 8))
    ]
    path = _placed_elsewhere(tmp_path / "gcps.tif", gcps=(points, CRS.from_epsg(32631)))
    result = runner.invoke(cli, ["info", path, "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert described["georeferencing"] == "gcps"
    assert described["gcps"] == {"count": 4, "crs": "EPSG:32631"}
    assert (described["transform"], described["bounds"], described["pixel_size"]) == (None, None, None)
    assert "rpcs" not in described
    table = runner.invoke(cli, ["info", path])
    assert table.exit_code == 0 and "count=4, crs=EPSG:32631" in table.output
    assert "8.0, 6.0" not in table.output  # no pixel bounds shown as coordinates


def test_info_reports_rpcs_instead_of_pixel_bounds(runner, tmp_path):
    from rasterio.rpc import RPC

    zeros = [0.0] * 20
    rpcs = RPC(
        height_off=245.0, height_scale=500.0, lat_off=52.37, lat_scale=0.04, long_off=4.89, long_scale=0.06,
        line_off=3.0, line_scale=3.0, samp_off=4.0, samp_scale=4.0, line_den_coeff=[1.0, *zeros[1:]],
        line_num_coeff=[0.0, 0.0, -1.0, *zeros[3:]], samp_den_coeff=[1.0, *zeros[1:]],
        samp_num_coeff=[0.0, 1.0, *zeros[2:]],
    )  # fmt: skip
    path = _placed_elsewhere(tmp_path / "rpcs.tif", rpcs=rpcs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(cli, ["info", path, "--json"])
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught] == [] and result.stderr == ""
    described = json.loads(result.stdout)
    assert described["georeferencing"] == "rpcs"
    assert described["rpcs"] == {
        "lat_off": 52.37, "long_off": 4.89, "height_off": 245.0, "lat_scale": 0.04, "long_scale": 0.06
    }  # fmt: skip
    assert (described["crs"], described["transform"], described["bounds"]) == (None, None, None)


def test_info_says_a_transform_places_an_ordinary_raster(runner, tmp_path):
    path = tmp_path / "ortho.tif"
    write_geotiff(path, np.zeros((1, 6, 8), np.uint8), **GEOREF)
    described = json.loads(runner.invoke(cli, ["info", str(path), "--json"]).stdout)
    assert described["georeferencing"] == "transform"
    assert described["bounds"] == [500000.0, 3999997.0, 500004.0, 4000000.0]
    assert "gcps" not in described and "rpcs" not in described


def test_info_lists_the_subdatasets_of_a_container(runner, tmp_path):
    path = tmp_path / "two.gpkg"
    for i, table in enumerate(["a", "b"]):
        options = {"RASTER_TABLE": table, **({"APPEND_SUBDATASET": "YES"} if i else {})}
        with rasterio.open(
            path, "w", driver="GPKG", width=8, height=8, count=3, dtype="uint8", **GEOREF, **options
        ) as dst:
            dst.write(np.zeros((3, 8, 8), np.uint8))
    result = runner.invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert (described["count"], described["subdatasets"]) == (0, [f"GPKG:{path}:a", f"GPKG:{path}:b"])
    one = runner.invoke(cli, ["info", f"GPKG:{path}:b", "--json"])
    assert one.exit_code == 0, one.output
    assert (json.loads(one.stdout)["count"], json.loads(one.stdout)["width"]) == (
        4,
        8,
    )  # GeoPackage tiles are RGBA
