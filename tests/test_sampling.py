"""``geoseg sample`` and labelled samples read back by ``geoseg evaluate`` (stratified estimates)."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from helpers import write_geotiff

from geoseg.area_estimation import stratified_estimates
from geoseg.cli.main import cli
from geoseg.sampling import draw_sample

NAMES = ["water", "building", "tree"]
COLOURS = [(0, 0, 255), (255, 0, 0), (0, 255, 0)]
TRANSFORM = Affine(0.5, 0, 120_000, 0, -0.5, 487_000)  # RD New, 0.5 m pixels


def _map(path, nodata_corner=True):
    """A 40 × 60 class map: water the top 10 rows, buildings the next 20, trees the rest; a nodata corner."""
    data = np.full((40, 60), 2, dtype=np.uint8)
    data[:10], data[10:30] = 0, 1
    if nodata_corner:
        data[:4, :4] = 255
    write_geotiff(path, data, crs="EPSG:28992", transform=TRANSFORM, nodata=255, classes=(NAMES, COLOURS))
    return str(path), data


def _read(path):
    meta, _, wkb, (map_class, reference) = pyogrio.raw.read(path)
    return meta, shapely.from_wkb(wkb), map_class, reference


def test_counts_per_stratum_are_exact_and_every_point_is_a_pixel_centre_of_its_class(tmp_path):
    classes, data = _map(tmp_path / "classes.tif")
    result = draw_sample(classes, tmp_path / "s.gpkg", per_class=7, allocation={"Water": 12}, seed=3,
                         block_size=16)  # fmt: skip
    assert result.units == {"water": 12, "building": 7, "tree": 7} and result.short == {}
    meta, points, map_class, reference = _read(tmp_path / "s.gpkg")
    assert meta["fields"].tolist() == ["map_class", "reference"] and meta["geometry_type"] == "Point"
    assert "28992" in meta["crs"]
    assert sorted(map_class.tolist()) == sorted(["water"] * 12 + ["building"] * 7 + ["tree"] * 7)
    assert all(r is None for r in reference)
    col, row = ~TRANSFORM * (shapely.get_x(points), shapely.get_y(points))
    assert np.array_equal(col % 1, np.full(len(points), 0.5)) and np.array_equal(row % 1, col % 1)
    values = data[row.astype(int), col.astype(int)]
    assert [NAMES[v] for v in values] == map_class.tolist()  # never nodata, always the raster's class
    assert len({(c, r) for c, r in zip(col, row, strict=True)}) == len(points)  # drawn without replacement


def test_a_seed_draws_the_same_points_and_another_seed_others(tmp_path):
    classes, _ = _map(tmp_path / "classes.tif")
    draws = []
    for name, seed, block in (("a", 5, 16), ("b", 5, 1024), ("c", 6, 16)):
        draw_sample(classes, tmp_path / f"{name}.gpkg", per_class=5, seed=seed, block_size=block)
        draws.append(shapely.to_wkt(_read(tmp_path / f"{name}.gpkg")[1]).tolist())
    assert draws[0] == draws[1] != draws[2]  # the blocks read do not change the draw


def test_a_class_with_fewer_pixels_than_asked_gives_all_of_them_with_a_warning(tmp_path):
    classes, data = _map(tmp_path / "classes.tif")
    with pytest.warns(UserWarning, match=r"fewer pixels than units asked for in water \(584 of 1000\)"):
        result = draw_sample(classes, tmp_path / "s.gpkg", per_class=3, allocation={"water": 1000}, seed=1)
    assert result.units["water"] == int((data == 0).sum()) == 584
    assert result.to_dict()["short"] == {"water": {"asked": 1000, "drawn": 584}}


def _fill(sample, reference):
    """Write ``reference`` into the sample's reference column, as a person in QGIS would."""
    meta, _, wkb, (map_class, _) = pyogrio.raw.read(sample)
    pyogrio.raw.write(sample, wkb, field_data=[map_class, np.array(reference, dtype=object)],
                      fields=["map_class", "reference"], geometry_type="Point", crs=meta["crs"])  # fmt: skip


def test_a_filled_sample_round_trips_to_hand_computed_accuracies_and_areas(tmp_path):
    classes, data = _map(tmp_path / "classes.tif")
    sample = tmp_path / "s.gpkg"
    draw_sample(classes, sample, per_class=10, seed=2)
    map_class = _read(sample)[2]
    reference = map_class.copy()
    buildings = np.flatnonzero(map_class == "building")
    reference[buildings[:2]] = "tree"  # two buildings are trees in truth
    reference[np.flatnonzero(map_class == "tree")[0]] = "WATER"  # names in any case
    reference[np.flatnonzero(map_class == "water")[0]] = None  # not labelled yet
    _fill(sample, reference)
    result = CliRunner().invoke(
        cli, ["evaluate", classes, str(sample), "--class-field", "reference", "--json"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    estimates = record["area_estimates"]
    assert record["sample_units"] == {"units": 29, "unlabelled": 1, "outside_map": 0, "on_nodata": 0}
    assert [estimates[n]["users_accuracy"] for n in NAMES] == [1.0, 0.8, 0.9]
    assert [estimates[n]["units"] for n in NAMES] == [9, 10, 10]  # units of each stratum (map class)
    # strata weights from the pixels (true areas vary by under 1e-6 over 30 m): 584, 1200, 600 pixels
    pixels = np.array([584, 1200, 600])
    counts = np.array([[9, 0, 0], [0, 8, 2], [1, 0, 9]])
    expected = stratified_estimates(counts, pixels)
    weights = pixels / pixels.sum()
    assert record["overall_accuracy"] == pytest.approx(weights @ [1.0, 0.8, 0.9], rel=1e-6)
    assert [estimates[n]["producers_accuracy"] for n in NAMES] == pytest.approx(
        expected.producers_accuracy, rel=1e-6
    )
    total_ha = sum(estimates[n]["mapped_area_ha"] for n in NAMES)
    assert total_ha == pytest.approx(2384 * 0.25 / 1e4, rel=1e-3)
    assert [estimates[n]["area_ha"] for n in NAMES] == pytest.approx(
        expected.area / pixels.sum() * total_ha, rel=1e-6
    )
    assert [estimates[n]["area_ci95_ha"] for n in NAMES] == pytest.approx(
        1.96 * expected.area_se / pixels.sum() * total_ha, rel=1e-6
    )


def test_points_off_the_map_or_on_nodata_are_counted_and_left_out(tmp_path):
    classes, _ = _map(tmp_path / "classes.tif")
    points = [(120_000.25, 486_999.75), (119_000, 487_000)]  # the nodata corner's first pixel; off the map
    points += [(120_000.25 + x, 486_994.75) for x in range(0, 30, 3)]  # row 10: buildings
    points += [(120_000.25 + x, 486_999.25 - 2.5) for x in range(6, 30, 3)]  # row 5: water
    points += [(120_000.25 + x, 486_984.75) for x in range(0, 30, 3)]  # row 30: trees
    reference = ["water", "water"] + ["building"] * 10 + ["water"] * 8 + ["tree"] * 10
    pyogrio.raw.write(tmp_path / "p.gpkg", shapely.to_wkb(shapely.points(points)),
                      field_data=[np.array(reference, dtype=object)], fields=["reference"],
                      geometry_type="Point", crs="EPSG:28992")  # fmt: skip
    result = CliRunner().invoke(
        cli, ["evaluate", classes, str(tmp_path / "p.gpkg"), "--class-field", "reference"]
    )
    assert result.exit_code == 0, result.output
    assert "from 28 units; left out: 0 without a reference, 1 outside the map, 1 on nodata" in result.output


def test_a_mapped_class_without_labelled_units_is_refused_in_one_line(tmp_path):
    classes, _ = _map(tmp_path / "classes.tif")
    pyogrio.raw.write(tmp_path / "p.gpkg", shapely.to_wkb(shapely.points([(120_000.25, 486_994.75)] * 2)),
                      field_data=[np.array(["building"] * 2, dtype=object)], fields=["reference"],
                      geometry_type="Point", crs="EPSG:28992")  # fmt: skip
    result = CliRunner().invoke(
        cli, ["evaluate", classes, str(tmp_path / "p.gpkg"), "--class-field", "reference"]
    )
    assert result.exit_code == 1
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(
            "no labelled sample unit lies on the map's water, tree, so its area cannot be estimated; "
            "label units of every mapped class (geoseg sample draws them per class)"
        )
    )


def test_sample_command_writes_the_points_and_refuses_an_unknown_class(tmp_path):
    classes, _ = _map(tmp_path / "classes.tif")
    out = tmp_path / "s.gpkg"
    result = CliRunner().invoke(cli, ["sample", classes, "-n", "4", "--seed", "1", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["units"] == {"water": 4, "building": 4, "tree": 4}
    result = CliRunner().invoke(
        cli, ["sample", classes, "--allocation", "road=3", "-o", str(tmp_path / "t.gpkg")]
    )
    assert result.exit_code == 1 and "'road' is no class; classes are water, building, tree" in result.output
    assert not (tmp_path / "t.gpkg").exists()
    result = CliRunner().invoke(cli, ["sample", classes, "-o", str(out)])
    assert result.exit_code == 1 and "exists" in result.output


def test_every_geopackage_geoseg_writes_is_version_1_2(tmp_path):
    """GDAL <= 3.6 warns on GeoPackage 1.4: samples, error and change polygons are 1.2 like the polygons."""
    import sqlite3

    classes, data = _map(tmp_path / "map.tif")
    older = tmp_path / "older.tif"
    with rasterio.open(classes) as src:
        write_geotiff(older, np.roll(data, 3, axis=1), classes=(NAMES, COLOURS), **src.profile)
    draw_sample(classes, tmp_path / "samples.gpkg", per_class=3, seed=0)
    runner = CliRunner()
    errors = runner.invoke(cli, ["evaluate", classes, str(older), "--errors", str(tmp_path / "errors.gpkg")])
    changes = runner.invoke(
        cli, ["evaluate", classes, str(older), "--changes", str(tmp_path / "changes.gpkg")]
    )
    assert (errors.exit_code, changes.exit_code) == (0, 0), errors.output + changes.output
    for name in ("samples.gpkg", "errors.gpkg", "changes.gpkg"):
        with sqlite3.connect(tmp_path / name) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (10200,), name


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"seed": -1}, "seed=-1: give a whole number, 0 or more"),
        ({"per_class": -4}, "per_class=-4: give 0 or more units per class"),
        ({"allocation": {"water": -5}}, "allocation={'water': -5}: give 0 or more units"),
        ({"per_class": 0, "allocation": {"water": 0}}, "per_class=0 with no count in an allocation draws "
                                                      "an empty sample; give per_class=1 or more, or counts "
                                                      "such as allocation={'water': 100}"),
        ({"allocation": {"ocean": 5}}, "allocation={'ocean': 5}: 'ocean' is no class; classes are water, "
                                       "building, tree"),
    ],
)  # fmt: skip
def test_draw_sample_names_the_parameter_it_refuses(tmp_path, given, message):
    from geoseg.errors import ConfigurationError

    classes, _ = _map(tmp_path / "classes.tif")
    with pytest.raises(ConfigurationError) as refused:
        draw_sample(classes, tmp_path / "s.gpkg", **given)
    assert str(refused.value) == message
    assert not (tmp_path / "s.gpkg").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--seed", "-1"], "--seed -1: give a whole number, 0 or more"),
        (["-n", "0"], "-n 0 with no count in an allocation draws an empty sample; give -n 1 or more, or "
                      "counts such as --allocation water=100"),
        (["--allocation", "water=abc"], "--allocation water=abc: 'water=abc' is not CLASS=COUNT; "
                                        "write e.g. 'water=100,building=50'"),
        (["--allocation", "ocean=5"], "--allocation ocean=5: 'ocean' is no class; classes are water, "
                                      "building, tree"),
    ],
)  # fmt: skip
def test_sample_command_names_the_flag_it_refuses_in_one_line(tmp_path, arguments, message):
    classes, _ = _map(tmp_path / "classes.tif")
    result = CliRunner().invoke(cli, ["sample", classes, "-o", str(tmp_path / "s.gpkg"), *arguments])
    assert result.exit_code == 1 and result.stderr == f"Error: {message}\n"


def test_per_class_0_leaves_out_the_classes_the_allocation_does_not_name(tmp_path):
    classes, _ = _map(tmp_path / "classes.tif")
    result = draw_sample(classes, tmp_path / "s.gpkg", per_class=0, allocation={"water": 4}, seed=1)
    assert result.units == {"water": 4, "building": 0, "tree": 0}
