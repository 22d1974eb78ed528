"""Training from label polygons: the loader yields exactly the label raster's pixels, windows and splits
follow the labels, and bad inputs fail before any step."""

from __future__ import annotations

import warnings

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from helpers import write_geotiff
from pyogrio.raw import write
from pyproj import Transformer

from geoseg.api import vectorize
from geoseg.cli.main import cli
from geoseg.errors import GeosegWarning
from geoseg.labels.polygons import VectorLabelOptions
from geoseg.labels.raster import LabelEncoding
from geoseg.model.checkpoint import load_checkpoint
from geoseg.model.presets import preset_card
from geoseg.training.dataset import check_pairs
from geoseg.training.vector_dataset import vector_training_sets

CARD = preset_card("potsdam", "resnet18")


@pytest.fixture(scope="module")
def potsdam(shared_data, tmp_path_factory):
    """The real Potsdam crop, its label raster, and that raster vectorized by geoseg (and in EPSG:4326)."""
    folder = shared_data / "labeled" / "potsdam"
    image = folder / "top_potsdam_2_10_RGB_0_0_512_512.tif"
    label = folder / "top_potsdam_2_10_label_0_0_512_512.tif"
    out = tmp_path_factory.mktemp("potsdam_polygons")
    polygons = out / "labels.gpkg"
    vectorize(label, polygons)
    meta, _, wkb, values = pyogrio.raw.read(polygons, columns=["class_id"])
    move = Transformer.from_crs(meta["crs"], "EPSG:4326", always_xy=True)
    moved = shapely.transform(
        shapely.from_wkb(wkb), lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1]))
    )
    lonlat = out / "labels_4326.gpkg"
    write(lonlat, shapely.to_wkb(moved), field_data=values, fields=["class_id"], geometry_type="Polygon",
          crs="EPSG:4326")  # fmt: skip
    return image, label, polygons, lonlat


def _raster_labels(image, label):
    # class indices, as vectorize writes them to class_id (the crop's colour table is no class palette)
    encoding = LabelEncoding(num_classes=CARD.num_classes)
    (raster,) = check_pairs([(image, label)], encoding, CARD.bands, 64)
    return raster


def _vector_labels(image, polygons, **kwargs):
    sets = vector_training_sets(
        [image], polygons, VectorLabelOptions("class_id"), CARD.class_names, crop=64,
        expected_bands=CARD.bands, **kwargs,
    )  # fmt: skip
    return sets


@pytest.mark.parametrize("which", ["same CRS", "EPSG:4326"])
def test_loader_yields_the_label_rasters_pixels_from_its_polygons(potsdam, which):
    image, label, polygons, lonlat = potsdam
    from_raster = _raster_labels(image, label)
    (from_polygons,) = _vector_labels(image, polygons if which == "same CRS" else lonlat).train
    assert np.array_equal(from_polygons.label_data, from_raster.label_data)
    assert np.array_equal(from_polygons.class_pixels, from_raster.class_pixels)
    # and window by window, as images too large to hold in memory are read
    from_polygons.label_data = from_polygons.image_data = None
    from_raster.label_data = from_raster.image_data = None
    for row, col, size in [(0, 0, 512), (37, 100, 200), (448, 448, 64)]:
        image_a, labels_a = from_polygons.read(row, col, size)
        image_b, labels_b = from_raster.read(row, col, size)
        assert np.array_equal(labels_a, labels_b) and np.array_equal(image_a, image_b)


def _boxes(image, tmp_path, boxes, classes, name="labels.gpkg"):
    """Polygons over pixel boxes (col0, row0, col1, row1) of ``image``."""
    with rasterio.open(image) as src:
        t, crs = src.transform, src.crs
    geometries = [shapely.box(*(t * (c0, r1)), *(t * (c1, r0))) for c0, r0, c1, r1 in boxes]
    path = tmp_path / name
    write(path, shapely.to_wkb(np.array(geometries)), field_data=[np.array(classes, dtype=object)],
          fields=["klasse"], geometry_type="Polygon", crs=crs.to_wkt())  # fmt: skip
    return path


def test_crops_are_drawn_only_where_labels_are(potsdam, tmp_path):
    image = potsdam[0]
    path = _boxes(image, tmp_path, [(400, 400, 420, 420)], ["building"])
    (raster,) = vector_training_sets(
        [image], path, VectorLabelOptions("klasse"), CARD.class_names, crop=64, expected_bands=CARD.bands
    ).train
    assert raster.regions == [(400, 400, 420, 420)] and raster.area == 400
    rng = np.random.default_rng(0)
    for _ in range(200):
        row, col = raster.origin(rng, 64)
        assert 400 - 63 <= row <= 419 and 400 - 63 <= col <= 419 and row + 64 <= 512 and col + 64 <= 512


def test_val_fraction_holds_out_whole_spatial_units_recorded_for_the_card(potsdam, tmp_path):
    image = potsdam[0]
    boxes = [(10, 10, 40, 40), (45, 10, 60, 30), (300, 300, 340, 340), (10, 400, 50, 450)]
    path = _boxes(image, tmp_path, boxes, ["building", "tree", "building", "car"])
    sets = vector_training_sets(
        [image], path, VectorLabelOptions("klasse"), CARD.class_names, crop=64, expected_bands=CARD.bands,
        val_fraction=0.34, seed=0,
    )  # fmt: skip
    record = sets.record
    assert record["spatial_units"] == 3  # the first two boxes lie within half a crop: one unit
    (train,), (val,) = sets.train, sets.validation
    assert len(record["validation_units"]) == 1
    held = tuple(record["validation_units"][0]["box_rows_cols"])
    assert val.regions == [held] and held not in train.regions
    labelled_val = val.label_data != 255
    labelled_train = train.label_data != 255
    assert not (labelled_val & labelled_train).any()  # no validation pixel is trained on
    assert labelled_val.sum() + labelled_train.sum() == 30 * 30 + 15 * 20 + 40 * 40 + 40 * 50


def test_images_without_labels_are_skipped_and_labels_on_no_image_counted(potsdam, tmp_path, shared_data):
    image = potsdam[0]
    other = tmp_path / "far.tif"
    with rasterio.open(image) as src:
        profile = src.profile
        data = src.read()
    profile.update(transform=src.transform * rasterio.Affine.translation(100_000, 0))
    write_geotiff(other, data, **profile)
    path = _boxes(image, tmp_path, [(10, 10, 40, 40), (-5000, 10, -4000, 40)], ["building", "tree"])
    with pytest.warns(GeosegWarning) as record:
        sets = vector_training_sets(
            [image, other], path, VectorLabelOptions("klasse"), CARD.class_names, crop=64,
            expected_bands=CARD.bands,
        )  # fmt: skip
    messages = [str(w.message) for w in record]
    assert any("skipped 1 image(s) with no label polygon on them: far.tif" in m for m in messages)
    assert any("1 of 2 label polygon(s) fall on no image" in m for m in messages)
    assert [r.image for r in sets.train] == [image]


def run(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def test_train_from_polygons_runs_and_records_the_split_in_the_card(potsdam, tmp_path):
    image = potsdam[0]
    boxes = [(10, 10, 100, 100), (300, 300, 400, 400), (10, 400, 100, 500)]
    path = _boxes(image, tmp_path, boxes, ["building", "tree", "Low Vegetation"])
    output = tmp_path / "m.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run(
            "--images", image, "--labels", path, "--class-field", "klasse", "--preset", "potsdam",
            "--backbone", "resnet18", "--crop", "64", "--batch-size", "2", "--steps", "2",
            "--val-fraction", "0.3", "--device", "cpu", "--json", "-o", output,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = load_checkpoint(output)[1].training["label_polygons"]
    assert record["class_field"] == "klasse" and record["spatial_units"] == 3
    assert len(record["validation_units"]) == 1
    assert record["pixel_rule"] == "pixel centre"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class-field", "class"], "no field 'class'; its fields are klasse"),
        ([], "is a vector file: name its class column with --class-field"),
        (["--class-field", "klasse", "--aoi", "missing.gpkg"], "missing.gpkg: AOI file not found"),
    ],
)
def test_bad_polygon_inputs_fail_in_one_line_before_any_step(potsdam, tmp_path, extra, message):
    image = potsdam[0]
    path = _boxes(image, tmp_path, [(10, 10, 40, 40)], ["building"])
    output = tmp_path / "m.safetensors"
    result = run(
        "--images", image, "--labels", path, *extra, "--preset", "potsdam", "--crop", "64", "-o", output
    )
    assert result.exit_code in (1, 2)
    assert message in result.output and "Traceback" not in result.output
    assert not output.exists()


def test_unknown_class_values_fail_listing_them(potsdam, tmp_path):
    image = potsdam[0]
    path = _boxes(image, tmp_path, [(10, 10, 40, 40), (50, 50, 60, 60)], ["Gebouw", "Gebouw"])
    result = run("--images", image, "--labels", path, "--class-field", "klasse", "--preset", "potsdam",
                 "--crop", "64", "-o", tmp_path / "m.safetensors")  # fmt: skip
    assert result.exit_code == 1
    assert "1 value(s) of field 'klasse' map to no class: 'Gebouw' (2)" in result.output
