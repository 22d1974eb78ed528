"""``geoseg vectorize``: options reach the library, results and failures are reported in one line."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner
from helpers import write_geotiff
from rasterio.transform import from_origin
from scipy import ndimage

from geoseg.cli.main import cli

NAMES = ["field", "building", "tree"]


@pytest.fixture
def runner():
    return CliRunner()


GRID = {"crs": "EPSG:32633", "transform": from_origin(366976.5, 5808562.6, 0.5, 0.5)}


def write_raster(path, data, **options) -> str:
    """``data`` on a 0.5 m UTM grid; ``options`` as write_geotiff's."""
    return str(write_geotiff(path, data, **GRID, **options))


@pytest.fixture
def classes_tif(tmp_path):
    rng = np.random.default_rng(1)
    smooth = ndimage.gaussian_filter(rng.standard_normal((3, 64, 64)), 2.0, axes=(1, 2))
    classes = smooth.argmax(axis=0).astype(np.uint8)
    classes[:8, :8] = 255
    named = (NAMES, [(0, 0, 0)] * len(NAMES))
    return write_raster(tmp_path / "classes.tif", classes, classes=named, nodata=255), classes


def counts(classes):
    return {NAMES[k]: ndimage.label(classes == k)[1] for k in range(3) if (classes == k).any()}


def test_json_reports_input_output_counts_per_class_name_and_seconds(runner, tmp_path, classes_tif):
    path, classes = classes_tif
    out = tmp_path / "polygons.gpkg"
    result = runner.invoke(cli, ["vectorize", path, "-o", str(out), "--json", "--split-polygons-at", "0"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert set(record) == {"input", "output", "polygons", "seconds"}
    assert record["input"] == path and record["output"] == str(out)
    assert record["polygons"] == counts(classes)
    assert pyogrio.read_info(out, layer="polygons")["features"] == sum(record["polygons"].values())


def test_options_reach_the_library(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    out = tmp_path / "trees.fgb"
    args = ["vectorize", path, "-o", str(out), "--classes", "tree", "--min-pixels", "5", "--simplify", "0.5"]
    args += ["--connectivity", "8", "--layer", "trees", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)["polygons"]) == ["tree"]
    info = pyogrio.read_info(out)
    assert info["geometry_type"] == "MultiPolygon"
    assert info["layer_name"] == "trees"


def test_help_gives_the_units_of_min_area_and_simplify_and_the_split_grid(runner):
    result = runner.invoke(cli, ["vectorize", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--simplify METRES" in text and "the tolerance is in metres on the ground" in text
    assert "(square metres on the ellipsoid, in any CRS)" in text
    assert "--split-polygons-at PX" in text and "[default: 4096]" in text


def test_split_grid_reaches_the_library_and_a_too_small_one_is_one_line(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    out = tmp_path / "cut.gpkg"
    args = ["vectorize", path, "-o", str(out), "--json"]
    whole = json.loads(runner.invoke(cli, [*args, "--split-polygons-at", "0"]).stdout)["polygons"]
    cut = json.loads(runner.invoke(cli, [*args, "--split-polygons-at", "16", "--overwrite"]).stdout)[
        "polygons"
    ]
    assert sum(cut.values()) > sum(whole.values())
    result = runner.invoke(cli, [*args, "--split-polygons-at", "8", "--overwrite"])
    assert result.exit_code == 1
    assert result.stderr == "Error: --split-polygons-at 8: give 0 (never split) or at least 16 pixels\n"


def test_summary_line_without_json(runner, tmp_path, classes_tif):
    path, classes = classes_tif
    out = tmp_path / "p.gpkg"
    result = runner.invoke(cli, ["vectorize", path, "-o", str(out)])
    assert result.exit_code == 0, result.output
    total = sum(counts(classes).values())
    assert result.stderr.startswith(f"{out}: {total} polygons (field ")


def test_summary_line_of_a_raster_without_valid_pixels_has_no_empty_brackets(runner, tmp_path):
    path = write_raster(tmp_path / "c.tif", np.full((8, 8), 255, np.uint8), nodata=255)
    out = tmp_path / "p.gpkg"
    result = runner.invoke(cli, ["vectorize", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"{out}: 0 polygons in ")  # was "0 polygons () in"
    assert pyogrio.read_info(out, layer="p")["features"] == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: write_raster(p, np.zeros((3, 8, 8), np.uint8)),
            "has 3 bands; vectorize needs a single-band",
        ),
        (
            lambda p: write_raster(p, np.zeros((8, 8), np.float32)),
            "holds float32 values; vectorize needs an integer",
        ),
    ],
)
def test_unsuitable_rasters_fail_in_one_line(runner, tmp_path, make, message):
    path = make(tmp_path / "bad.tif")
    result = runner.invoke(cli, ["vectorize", path, "-o", str(tmp_path / "x.gpkg")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "x.gpkg").exists()


def test_unknown_class_name(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    result = runner.invoke(cli, ["vectorize", path, "-o", str(tmp_path / "x.gpkg"), "--classes", "road"])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {path}: unknown class 'road'; class names: field, building, tree\n"


def test_existing_output_without_overwrite(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    out = tmp_path / "x.gpkg"
    out.write_text("old")
    result = runner.invoke(cli, ["vectorize", path, "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {out}: output exists; pass --overwrite to replace it\n"
    assert out.read_text() == "old"
    assert runner.invoke(cli, ["vectorize", path, "-o", str(out), "-f"]).exit_code == 0


def test_unwritable_folder(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    out = tmp_path / "missing" / "x.gpkg"
    result = runner.invoke(cli, ["vectorize", path, "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {out}: folder {out.parent} does not exist\n"


def test_unknown_suffix(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    result = runner.invoke(cli, ["vectorize", path, "-o", str(tmp_path / "x.kml")])
    assert result.exit_code == 1
    assert "unknown output format '.kml'; use one of .gpkg, .fgb, .geojson, .parquet, .shp" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min-area", "2", "--min-pixels", "3"], "give either --min-area or --min-pixels, not both"),
        (["--connectivity", "6"], "'6' is not one of '4', '8'"),
        (["--split-polygons-at", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_usage_errors_exit_2(runner, tmp_path, classes_tif, extra, message):
    path, _ = classes_tif
    result = runner.invoke(cli, ["vectorize", path, "-o", str(tmp_path / "x.gpkg"), *extra])
    assert result.exit_code == 2
    assert message in result.stderr


def test_ctrl_c_exits_130_and_leaves_nothing(runner, tmp_path, classes_tif, monkeypatch):
    path, _ = classes_tif
    folder = tmp_path / "out"
    folder.mkdir()
    import geoseg.vector.vectorize as module

    real = module.polygonize_window
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "polygonize_window", interrupted)
    result = runner.invoke(cli, ["vectorize", path, "-o", str(folder / "x.shp"), "--split-polygons-at", "16"])
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert list(folder.iterdir()) == []


def test_json_lists_the_style_beside_the_polygons_and_no_styles_writes_none(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    result = runner.invoke(cli, ["vectorize", path, "-o", str(tmp_path / "p.fgb"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["style"] == str(tmp_path / "p.qml") and (tmp_path / "p.qml").is_file()
    result = runner.invoke(cli, ["vectorize", path, "-o", str(tmp_path / "q.fgb"), "--json", "--no-styles"])
    assert result.exit_code == 0, result.output
    assert "style" not in json.loads(result.stdout) and not (tmp_path / "q.qml").exists()


def test_polygons_named_like_their_raster_are_one_line(runner, tmp_path, classes_tif):
    path, _ = classes_tif
    result = runner.invoke(cli, ["vectorize", path, "-o", str(tmp_path / "classes.shp")])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {tmp_path / 'classes.shp'}: its QGIS style {tmp_path / 'classes.qml'} would replace the "
        f"style of {path}; give the output another name, or pass --no-styles\n"
    )
