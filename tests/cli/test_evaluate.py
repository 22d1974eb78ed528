"""``geoseg evaluate`` on the command line: exit codes, messages, JSON keys, the confusion CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from helpers import classes_and_transparency, write_geotiff

from geoseg.cli.main import cli


def evaluate_args(tmp_path) -> list[str]:
    classes, _ = classes_and_transparency()
    prediction = write(tmp_path / "classes.tif", classes[None])
    truth = write(tmp_path / "truth.tif", classes[None])
    return ["evaluate", str(prediction), str(truth), "-q"]


# every file this module reads names its layer or holds one: a styled GeoPackage's style table is no layer
pytestmark = pytest.mark.filterwarnings("error:More than one layer found")

TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], dtype=np.uint8)
PREDICTION = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 2], [2, 2, 2, 1]], dtype=np.uint8)


def write(path, data, crs=None, transform=None, **options) -> str:
    """``data`` not georeferenced unless ``crs`` and ``transform`` place it; ``options``: write_geotiff's."""
    return str(write_geotiff(path, data, crs=crs, transform=transform, **options))


# a 1 m grid in the Dutch national CRS, where the truth polygons of _truth_polygons lie
AMERSFOORT = {"crs": "EPSG:28992", "transform": Affine(1, 0, 1000, 0, -1, 2000)}


@pytest.fixture()
def rasters(tmp_path):
    return write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", TRUTH)


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def test_json_report_has_the_documented_keys_and_values(rasters):
    result = run(*rasters, "--json", "--exclude-classes", "2")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert {"overall_accuracy", "mean_f1", "mean_iou", "per_class"} <= set(record)
    assert record["overall_accuracy"] == 0.75
    assert record["mean_iou"] == pytest.approx((3 / 5 + 1 / 2) / 2)
    assert record["per_class"][1] == {
        "index": 1,
        "name": "1",
        "precision": 0.6,
        "recall": 0.75,
        "f1": pytest.approx(2 / 3),
        "iou": 0.5,
        "pixels": 4,
        "predicted_pixels": 5,
        "excluded": False,
    }
    assert record["excluded_classes"] == ["2"]


def test_table_names_preset_classes_and_the_means(rasters):
    result = run(*rasters, "--preset", "vaihingen", "--exclude-classes", "clutter")
    assert result.exit_code == 0, result.output
    assert "impervious surfaces" in result.output
    assert "clutter (excluded)" in result.output
    assert "overall accuracy 75.00 %" in result.output
    assert "without clutter" in result.output


def test_confusion_csv_is_written_and_not_overwritten_without_flag(rasters, tmp_path):
    csv_path = tmp_path / "confusion.csv"
    assert run(*rasters, "--confusion", csv_path, "-q").exit_code == 0
    assert csv_path.read_text().splitlines()[1] == "0,3,1,0"
    again = run(*rasters, "--confusion", csv_path)
    assert again.exit_code == 1
    assert "confusion.csv: output exists; pass --overwrite" in again.output
    assert run(*rasters, "--confusion", csv_path, "--overwrite").exit_code == 0


def test_rasters_of_different_sizes_fail_with_one_line(tmp_path):
    result = run(write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", np.zeros((5, 4), np.uint8)))
    assert result.exit_code == 1
    assert "p.tif is 4×4 pixels but" in result.output and "t.tif is 4×5" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_truth_raster_is_an_error(rasters, tmp_path):
    result = run(rasters[0], tmp_path / "nope.tif")
    assert result.exit_code == 1
    assert "nope.tif: truth raster not found" in result.output


def test_label_offset_ignores_unlabelled_pixels(tmp_path):
    truth = TRUTH + 1
    truth[0, 0] = 0
    result = run(
        write(tmp_path / "p.tif", PREDICTION),
        write(tmp_path / "t.tif", truth),
        "--label-offset",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pixels_ignored"] == 1


def test_preset_and_card_together_are_a_usage_error(rasters, tmp_path):
    result = run(*rasters, "--preset", "potsdam", "--card", tmp_path / "card.json")
    assert result.exit_code == 2
    assert "either --preset or --card" in result.output


def test_truth_shifted_by_one_pixel_of_a_fine_degree_grid_is_refused(tmp_path):
    from rasterio.transform import from_origin

    pixel = 9e-7  # ~0.1 m at the equator: one whole pixel is far below any absolute tolerance in degrees
    prediction = write(tmp_path / "p.tif", PREDICTION, "EPSG:4326", from_origin(5.0, 52.0, pixel, pixel))
    truth = write(tmp_path / "t.tif", TRUTH, "EPSG:4326", from_origin(5.0, 52.0 + pixel, pixel, pixel))
    result = run(prediction, truth)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "have different transforms: the same pixel lies up to 1 px apart" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_truth_in_the_same_crs_written_by_another_tool_is_accepted(tmp_path):
    from pyproj import CRS as ProjCRS
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    transform = from_origin(500000.0, 5800000.0, 0.5, 0.5)
    esri = CRS.from_wkt(ProjCRS.from_epsg(32631).to_wkt("WKT1_ESRI"))  # no EPSG code, other names
    prediction = write(tmp_path / "p.tif", PREDICTION, "EPSG:32631", transform)
    truth = write(tmp_path / "t.tif", TRUTH, esri, transform)
    result = run(prediction, truth, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pixels_evaluated"] == 16


def test_confusion_csv_onto_an_input_raster_is_refused_and_the_input_kept(rasters):
    prediction, truth = rasters
    before = Path(prediction).read_bytes()
    result = run(prediction, truth, "--confusion", prediction, "--overwrite")
    assert result.exit_code == 1
    assert "is also an input of this command" in result.output
    assert Path(prediction).read_bytes() == before


def _truth_polygons(path, crs="EPSG:28992"):
    """TRUTH as polygons: two-pixel-high rows of the 4×4 grid (0,0 at x 1000, y 2000), in class names."""
    import shapely
    from pyogrio.raw import write as write_vector

    geometries = [
        shapely.box(1000, 1998, 1002, 2000),
        shapely.box(1002, 1998, 1004, 2000),
        shapely.box(1000, 1996, 1004, 1998),
    ]
    classes = np.array(["A", "b", "c"], dtype=object)
    write_vector(path, shapely.to_wkb(np.array(geometries)), field_data=[classes], fields=["klasse"],
                 geometry_type="Polygon", crs=crs)  # fmt: skip
    return str(path)


def test_truth_polygons_score_as_the_truth_raster(tmp_path):
    prediction = write(tmp_path / "p.tif", PREDICTION, **AMERSFOORT)
    truth = write(tmp_path / "t.tif", TRUTH, **AMERSFOORT)
    polygons = _truth_polygons(tmp_path / "truth.gpkg")
    from_raster = json.loads(run(prediction, truth, "--json").output)
    result = run(prediction, polygons, "--class-field", "klasse", "--class-map", "A=0,b=1,C=2", "--json")
    assert result.exit_code == 0, result.output
    from_polygons = json.loads(result.output)
    assert from_polygons["confusion"] == from_raster["confusion"] == [[3, 1, 0], [0, 3, 1], [1, 1, 6]]
    assert from_polygons["overall_accuracy"] == from_raster["overall_accuracy"] == 12 / 16


def test_truth_polygons_need_their_class_field_and_name_the_missing_one(tmp_path):
    prediction = write(tmp_path / "p.tif", PREDICTION, **AMERSFOORT)
    polygons = _truth_polygons(tmp_path / "truth.gpkg")
    result = run(prediction, polygons)
    assert result.exit_code == 2 and "name its class column with --class-field" in result.output
    result = run(prediction, polygons, "--class-field", "class", "--class-map", "A=0")
    assert result.exit_code == 1
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith("no field 'class'; its fields are klasse; name one with --class-field FIELD")
    )


def test_errors_are_written_as_polygons_with_both_classes_and_true_areas_largest_first(tmp_path):
    import pyogrio

    predicted = PREDICTION.copy()
    predicted[1, 3], predicted[2:, :] = 1, 2  # right but for (0, 1): truth 0 mapped as 1
    predicted[2, 2:] = 0  # and two neighbouring pixels of class 2 mapped as 0
    prediction = write(tmp_path / "p.tif", predicted, **AMERSFOORT)
    truth = write(tmp_path / "t.tif", TRUTH, **AMERSFOORT)
    errors = tmp_path / "errors.gpkg"
    result = run(prediction, truth, "--errors", errors, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["error_polygons"] == 2
    meta, _, wkb, (truth_names, predicted_names, areas) = pyogrio.raw.read(errors, layer="errors")
    assert meta["fields"].tolist() == ["truth", "predicted", "area_m2"]
    assert truth_names.tolist() == ["2", "0"] and predicted_names.tolist() == ["0", "1"]
    import shapely

    polygons = shapely.from_wkb(wkb)
    assert shapely.equals(polygons[0], shapely.box(1002, 1997, 1004, 1998))
    assert shapely.equals(polygons[1], shapely.box(1001, 1999, 1002, 2000))
    assert areas[0] == pytest.approx(2 * areas[1], rel=1e-6)
    assert 0.99 < areas[1] < 1.0  # a 1 m pixel on the ellipsoid, where RD's scale there is about 0.9986


def test_truth_whose_datum_is_only_named_differently_is_scored_with_one_warning(tmp_path):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    unnamed = CRS.from_wkt(
        'PROJCS["WGS 84 / UTM zone 32N",GEOGCS["Unknown datum based upon the WGS 84 ellipsoid",'
        'DATUM["Not_specified_based_on_WGS_84_spheroid",SPHEROID["WGS 84",6378137,298.257223563]],'
        'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
        'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",9],PARAMETER["scale_factor",0.9996],'
        'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1]]'
    )
    transform = from_origin(500000.0, 5800000.0, 0.5, 0.5)
    prediction = write(tmp_path / "p.tif", PREDICTION, "EPSG:32632", transform)
    truth = write(tmp_path / "t.tif", TRUTH, unnamed, transform)
    result = run(prediction, truth, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pixels_evaluated"] == 16
    assert result.stderr.splitlines() == [
        f"Warning: {prediction} is in EPSG:32632 and {truth} in 'WGS 84 / UTM zone 32N', whose datums are "
        "named differently but lie on one another (no pixel moves by 0.01 m): taken as one CRS"
    ]


def _class_map(path, data, names=("water", "building", "tree")):
    classes = (list(names), [(0, 0, 255), (255, 0, 0), (0, 255, 0)])
    return write(path, data, nodata=255, classes=classes, **AMERSFOORT)


def test_two_maps_compare_as_a_from_to_matrix_in_hectares_and_change_polygons(tmp_path):
    import pyogrio
    import shapely

    from geoseg.api import evaluate

    old = TRUTH.copy()
    new = TRUTH.copy()
    new[0, :2] = 1  # two water pixels became buildings (one region)
    new[3, 3] = 0  # a tree pixel became water
    old[3, 0] = 255  # nodata in the old map
    new[2, 0] = 255  # and in the new one
    older, newer = _class_map(tmp_path / "old.tif", old), _class_map(tmp_path / "new.tif", new)
    changes = tmp_path / "changes.gpkg"
    result = run(newer, older, "--changes", changes, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["pixels_ignored"] == 2 and record["pixels_evaluated"] == 14
    assert record["confusion"] == [[2, 2, 0], [0, 4, 0], [1, 0, 5]]  # rows from, columns to
    pixel_ha = np.array(record["areas"]["confusion_ha"]) / np.maximum(record["confusion"], 1)
    changed = record["changes"]
    assert changed["classes"] == ["water", "building", "tree"] and changed["unit"] == "ha"
    assert changed["pixels_changed"] == 3 and changed["polygons"] == str(changes)
    # 1 m pixels of RD New: 1e-4 ha each times the area scale there, far off RD's centre (about 0.9973)
    assert np.allclose(pixel_ha[np.array(record["confusion"]) > 0], 0.9973e-4, rtol=1e-4)
    assert changed["from_to"][0][1] == pytest.approx(2 * changed["from_to"][2][0], rel=1e-6)
    assert changed["changed"] == pytest.approx(sum(changed["from_to"][i][j] for i, j in ((0, 1), (2, 0))))
    meta, _, wkb, (froms, tos, areas) = pyogrio.raw.read(changes, layer="changes")
    assert meta["fields"].tolist() == ["from", "to", "area_m2"]
    assert list(zip(froms, tos, strict=True)) == [("water", "building"), ("tree", "water")]  # largest first
    assert shapely.equals(shapely.from_wkb(wkb[0]), shapely.box(1000, 1999, 1002, 2000))
    assert areas.sum() == pytest.approx(changed["changed"] * 1e4, abs=1e-4)  # ha rounded to 1e-8
    api = evaluate(newer, older, changes=tmp_path / "again.gpkg")  # the same through the Python API
    assert api.changes()["from_to"] == changed["from_to"] and api.error_polygons == 2


def test_changes_need_two_maps_of_one_class_scheme_and_one_grid(tmp_path):
    older = _class_map(tmp_path / "old.tif", TRUTH, names=("water", "road", "tree"))
    newer = _class_map(tmp_path / "new.tif", TRUTH)
    result = run(newer, older, "--changes", tmp_path / "c.gpkg")
    assert result.exit_code == 1 and "two maps compare only in one class scheme" in result.output
    assert not (tmp_path / "c.gpkg").exists()
    shifted = tmp_path / "shifted.tif"
    write(shifted, TRUTH, "EPSG:28992", Affine(1, 0, 1001, 0, -1, 2000))
    result = run(newer, shifted, "--changes", tmp_path / "c.gpkg")
    assert result.exit_code == 1 and not (tmp_path / "c.gpkg").exists()
    result = run(newer, older, "--changes", tmp_path / "c.gpkg", "--errors", tmp_path / "e.gpkg")
    assert result.exit_code == 2 and "--changes compares two class rasters" in result.output


def _style_categories(qml: str) -> tuple[str, list[tuple[str, str]]]:
    """The field a categorized polygon style reads, and its (value, fill colour) categories."""
    import xml.etree.ElementTree as ET

    renderer = ET.fromstring(qml).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol"
    symbols = {s.get("name"): s for s in renderer.find("symbols")}
    colours = [
        {o.get("name"): o.get("value") for o in symbols[c.get("symbol")].find("layer/Option")}["color"]
        for c in renderer.find("categories")
    ]
    values = [c.get("value") for c in renderer.find("categories")]
    return renderer.get("attr"), list(zip(values, colours, strict=True))


def _style_rows(path) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(path) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'layer_styles'").fetchall():
            return []
        return db.execute("SELECT f_table_name, styleQML FROM layer_styles").fetchall()


MAP_COLOURS = [("water", "0,0,255,255"), ("building", "255,0,0,255"), ("tree", "0,255,0,255")]


def test_error_polygons_are_styled_by_predicted_class_in_the_maps_colours(tmp_path):
    predicted = TRUTH.copy()
    predicted[0, 0] = 1
    prediction, truth = _class_map(tmp_path / "p.tif", predicted), _class_map(tmp_path / "t.tif", TRUTH)
    result = run(prediction, truth, "--errors", tmp_path / "errors.gpkg")
    assert result.exit_code == 0, result.output
    ((layer, qml),) = _style_rows(tmp_path / "errors.gpkg")
    assert layer == "errors" and _style_categories(qml) == ("predicted", MAP_COLOURS)
    result = run(prediction, truth, "--errors", tmp_path / "errors.fgb")  # other formats: a .qml beside
    assert result.exit_code == 0, result.output
    qml = (tmp_path / "errors.qml").read_text(encoding="utf-8")
    assert _style_categories(qml) == ("predicted", MAP_COLOURS)


def test_change_polygons_are_styled_by_the_class_they_changed_to(tmp_path):
    new = TRUTH.copy()
    new[0, :2] = 1
    older, newer = _class_map(tmp_path / "old.tif", TRUTH), _class_map(tmp_path / "new.tif", new)
    result = run(newer, older, "--changes", tmp_path / "changes.gpkg")
    assert result.exit_code == 0, result.output
    ((layer, qml),) = _style_rows(tmp_path / "changes.gpkg")
    assert layer == "changes" and _style_categories(qml) == ("to", MAP_COLOURS)


def test_no_styles_writes_review_polygons_without_a_style(tmp_path):
    predicted = TRUTH.copy()
    predicted[0, 0] = 1
    prediction, truth = _class_map(tmp_path / "p.tif", predicted), _class_map(tmp_path / "t.tif", TRUTH)
    for name in ("errors.gpkg", "errors.fgb"):
        result = run(prediction, truth, "--errors", tmp_path / name, "--no-styles")
        assert result.exit_code == 0, result.output
    assert _style_rows(tmp_path / "errors.gpkg") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.fgb", "errors.gpkg", "p.tif", "t.tif"]
    result = run(prediction, truth, "--changes", tmp_path / "changes.gpkg", "--no-styles")
    assert result.exit_code == 0 and _style_rows(tmp_path / "changes.gpkg") == []


def test_a_map_without_colours_writes_error_polygons_without_a_style(tmp_path):
    prediction = write(tmp_path / "p.tif", PREDICTION, **AMERSFOORT)
    truth = write(tmp_path / "t.tif", TRUTH, **AMERSFOORT)
    result = run(prediction, truth, "--errors", tmp_path / "errors.fgb")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.fgb", "p.tif", "t.tif"]


def test_truth_polygons_geoseg_vectorized_read_without_a_layer_name(tmp_path):
    from geoseg.api import vectorize

    classes = _class_map(tmp_path / "map.tif", TRUTH)
    vectorize(classes, tmp_path / "truth.gpkg")  # with its layer_styles table, which GDAL lists as a layer
    result = run(classes, tmp_path / "truth.gpkg", "--class-field", "class_name", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["overall_accuracy"] == 1.0 and record["pixels_evaluated"] == 16


def test_evaluate_refuses_one_file_for_both_the_confusion_csv_and_the_plot(tmp_path):
    """``--confusion x.png --plot x.png`` wrote the CSV, then failed ('output exists') with the CSV left
    under the picture's name."""
    same = str(tmp_path / "scores.png")

    result = CliRunner().invoke(cli, [*evaluate_args(tmp_path), "--confusion", same, "--plot", same])

    assert result.exit_code == 2
    assert "--confusion and --plot name the same file" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "truth.tif"]


def test_evaluate_leaves_no_confusion_csv_when_the_plot_fails(tmp_path, monkeypatch):
    """The CSV was renamed into place before the plot was drawn: a failure or a stop signal while drawing
    left it alone, the result of a run that failed."""
    import geoseg.api
    from geoseg.errors import GeosegError

    def failing_plot(*args, **kwargs):
        raise GeosegError("drawing failed")

    monkeypatch.setattr(geoseg.api, "plot_evaluation", failing_plot, raising=False)
    confusion, plot = tmp_path / "confusion.csv", tmp_path / "scores.png"

    result = CliRunner().invoke(
        cli, [*evaluate_args(tmp_path), "--confusion", str(confusion), "--plot", str(plot)]
    )

    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: drawing failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "truth.tif"]


def test_evaluate_writes_the_confusion_csv_and_the_plot_together(tmp_path):
    confusion, plot = tmp_path / "confusion.csv", tmp_path / "scores.png"

    result = CliRunner().invoke(
        cli, [*evaluate_args(tmp_path), "--confusion", str(confusion), "--plot", str(plot), "--json"]
    )

    assert result.exit_code == 0, result.output
    assert confusion.read_text().splitlines()[:2] == ["truth \\ prediction,0,1,2,3", "0,48,0,0,0"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classes.tif",
        "confusion.csv",
        "scores.png",
        "truth.tif",
    ]


def test_evaluate_of_a_prediction_without_valid_pixels_names_both_files(tmp_path):
    """An all-nodata prediction was reported as 'truth.tif: no pixels to compare', naming the file that was
    fine."""
    classes, _ = classes_and_transparency()
    prediction = write_geotiff(
        tmp_path / "classes.tif", np.full((1, *classes.shape), 255, np.uint8), nodata=255
    )
    truth = write_geotiff(tmp_path / "truth.tif", classes[None])

    result = CliRunner().invoke(cli, ["evaluate", str(prediction), str(truth), "-q"])

    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {prediction} vs {truth}: no pixels to compare (every pixel is ignored in the truth or "
        "nodata in the prediction); check --ignore-index N, --label-offset N and the prediction's nodata"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--class-map", "bad"], "--class-map bad: 'bad' is not VALUE=CLASS; "
                                 "write 'Gebouw=building,Weg=road' or name a JSON file"),
        (["--class-map", "A=nosuch"], "--class-map A=nosuch: 'nosuch' is no class; classes are water, "
                                      "building, tree"),
        (["--class-map", "missing.json"], "--class-map missing.json: the file does not exist"),
        (["--class-map", "maps/"], "--class-map maps/: the file does not exist"),
        (["--class-map", "A=0", "--ignore-index", "300"], "--ignore-index 300: give a label index 0..255"),
        (["--class-map", "A=0,b=1,c=2", "--priority", "nosuch"], "--priority nosuch: 'nosuch' is no class; "
                                                                 "classes are water, building, tree"),
    ],
)  # fmt: skip
def test_class_names_the_polygons_refuse_are_shown_as_the_flag_that_gave_them(tmp_path, arguments, message):
    prediction = _class_map(tmp_path / "p.tif", PREDICTION)
    result = run(prediction, _truth_polygons(tmp_path / "truth.gpkg"), "--class-field", "klasse", *arguments)
    assert result.exit_code == 1 and result.stderr == f"Error: {message}\n"
