"""geoseg.evaluation: block-wise scoring, label decoding, grid checks; real rasters vs independent counts."""

from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pytest
import rasterio
from helpers import class_raster_with_alpha, expected_scores, write_geotiff
from rasterio.transform import from_origin

from geoseg.errors import ConfigurationError, InputError
from geoseg.evaluation import evaluate, write_confusion_csv
from geoseg.labels import IGNORE
from geoseg.labels.raster import LabelEncoding, decode_labels
from geoseg.model.presets import preset_card

TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], dtype=np.uint8)
PREDICTION = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 2], [2, 2, 2, 1]], dtype=np.uint8)
CRS = "EPSG:32633"
TRANSFORM = from_origin(366976.5, 5808562.6, 0.05, 0.05)


def write(path, data, *, crs=CRS, transform=TRANSFORM, **options):
    """``data`` on this module's grid (``crs=None``: not georeferenced); ``options`` as write_geotiff's."""
    return str(write_geotiff(path, data, crs=crs, transform=transform if crs else None, **options))


def test_hand_example_through_rasters_matches_fractions(tmp_path):
    result = evaluate(write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", TRUTH))
    assert result.class_names == ["0", "1", "2"]
    assert result.confusion.tolist() == [[3, 1, 0], [0, 3, 1], [1, 1, 6]]
    assert math.isclose(result.overall_accuracy, 0.75)
    assert math.isclose(result.mean_f1, float(F(133, 180)))
    assert math.isclose(result.mean_iou, float(F(53, 90)))
    assert [c.pixels for c in result.per_class] == [4, 4, 8]
    assert [round(c.iou, 12) for c in result.per_class] == [0.6, 0.5, round(2 / 3, 12)]


def test_prediction_nodata_and_offset_truth_ignore_are_left_out(tmp_path):
    truth = TRUTH + 1  # 1-based, as ISPRS index crops store them
    truth[0, 0] = 0  # unlabelled
    prediction = PREDICTION.copy()
    prediction[3, 3] = 255  # nodata
    result = evaluate(
        write(tmp_path / "p.tif", prediction, nodata=255), write(tmp_path / "t.tif", truth), label_offset=1
    )
    assert result.confusion.tolist() == [[2, 1, 0], [0, 3, 1], [1, 0, 6]]
    assert result.pixels_evaluated == 14 and result.pixels_ignored == 2


def test_names_and_ignore_index_come_from_the_card_and_excluded_class_leaves_means(tmp_path):
    card = preset_card("vaihingen")  # six classes, ignore index 6
    truth = TRUTH.copy()
    truth[0, 0] = 6
    result = evaluate(
        write(tmp_path / "p.tif", PREDICTION),
        write(tmp_path / "t.tif", truth),
        card=card,
        exclude_classes=["low vegetation"],
    )
    assert result.class_names == card.class_names
    assert result.pixels_evaluated == 15
    assert result.excluded_classes == ["low vegetation"]
    # classes 3..5 have no pixels at all: NaN, not averaged; class 2 is excluded
    assert all(math.isnan(c.iou) for c in result.per_class[3:])
    # without the [0, 0] pixel: class 0 TP 2, FP 1, FN 1 -> IoU 1/2; class 1 TP 3, FP 2, FN 1 -> IoU 1/2
    assert math.isclose(result.mean_iou, 0.5)
    assert math.isclose(result.overall_accuracy, 11 / 15)


def test_names_come_from_the_prediction_raster_tag(tmp_path):
    names = ["water", "land", "town"]
    prediction = write(
        tmp_path / "p.tif", PREDICTION, classes=(names, [(0, 0, 255), (0, 255, 0), (255, 0, 0)])
    )
    result = evaluate(prediction, write(tmp_path / "t.tif", TRUTH))
    assert [c.name for c in result.per_class] == names


def test_colour_truth_converts_with_the_preset_colours_and_black_is_ignored(tmp_path):
    card = preset_card("potsdam")
    palette = np.array([c.color for c in card.classes] + [(0, 0, 0)], dtype=np.uint8)
    truth = TRUTH.copy()
    truth[0, 0] = 6  # black: an eroded boundary
    colour = np.moveaxis(palette[truth], -1, 0)
    result = evaluate(
        write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", colour), preset="potsdam"
    )
    expected = evaluate(
        write(tmp_path / "p2.tif", PREDICTION), write(tmp_path / "t2.tif", truth), preset="potsdam"
    )
    assert result.confusion.tolist() == expected.confusion.tolist()
    assert result.pixels_evaluated == 15


def test_colour_not_in_the_table_is_an_error_naming_it():
    colour = np.zeros((3, 2, 2), dtype=np.uint8)
    colour[:, 0, 0] = (12, 34, 56)
    encoding = LabelEncoding(num_classes=2, colors=((255, 255, 255), (0, 0, 255)))
    with pytest.raises(InputError, match=r"t\.png: 1 label pixels .* e\.g\. \(12, 34, 56\)"):
        decode_labels(colour, encoding, "t.png")


def test_colour_truth_without_colours_asks_for_a_preset(tmp_path):
    colour = np.zeros((3, 4, 4), dtype=np.uint8)
    with pytest.raises(InputError, match="colour label raster .* pass preset=NAME or card=FILE"):
        evaluate(write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", colour))


def test_decode_labels_offset_ignore_index_and_nodata():
    stored = np.array([[[0, 1, 2, 3, 9]]], dtype=np.uint8)
    encoding = LabelEncoding(num_classes=3, ignore_index=2, offset=1, nodata=9)
    assert decode_labels(stored, encoding, "x").tolist() == [[IGNORE, 0, 1, IGNORE, IGNORE]]


@pytest.mark.parametrize("ignore_index", [300, -1, 2.5])
def test_an_ignore_index_no_label_can_hold_is_refused_naming_the_parameter(tmp_path, ignore_index):
    from geoseg.errors import ConfigurationError

    prediction, truth = write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", TRUTH)
    with pytest.raises(ConfigurationError) as refused:
        evaluate(prediction, truth, ignore_index=ignore_index)
    assert str(refused.value) == f"ignore_index={ignore_index}: give a label index 0..255"


def test_ignore_index_255_is_a_label_index_as_uavid_s_card_says(tmp_path):
    truth = TRUTH.copy()
    truth[0] = 255  # the first row unlabelled: left out of the scores
    result = evaluate(
        write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", truth), ignore_index=255
    )
    assert result.confusion.sum() == 12


def test_truth_value_outside_the_classes_suggests_the_label_offset(tmp_path):
    truth = TRUTH + 5  # 5 = clutter, 6 = the preset's ignore index, 7 = no class
    with pytest.raises(
        InputError, match=r"t\.tif: 8 label pixels hold value\(s\) 7 that lie outside .*label_offset=N"
    ):
        evaluate(write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", truth), preset="potsdam")


def test_class_count_comes_from_the_names_on_the_prediction(tmp_path):
    prediction = write(
        tmp_path / "p.tif", PREDICTION, classes=(["a", "b", "c"], [(1, 1, 1), (2, 2, 2), (3, 3, 3)])
    )
    with pytest.raises(
        InputError, match=r"t\.tif: 8 label pixels hold value\(s\) 3 that lie outside the 3 classes"
    ):
        evaluate(prediction, write(tmp_path / "t.tif", TRUTH + 1))


def test_prediction_value_outside_the_classes_is_an_error(tmp_path):
    prediction = PREDICTION.copy()
    prediction[0, 0] = 9
    with pytest.raises(InputError, match=r"p\.tif: class value\(s\) 9 outside the 6 classes"):
        evaluate(write(tmp_path / "p.tif", prediction), write(tmp_path / "t.tif", TRUTH), preset="potsdam")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(data=np.zeros((5, 4), np.uint8)), r"p\.tif is 4×4 pixels but .*t\.tif is 4×5"),
        (dict(data=TRUTH, crs="EPSG:4326"), "p.tif is in EPSG:32633 but .*t.tif is in EPSG:4326"),
        (dict(data=TRUTH, transform=from_origin(366977.5, 5808562.6, 0.05, 0.05)), "different transforms"),
    ],
)
def test_rasters_on_different_grids_are_refused_naming_the_difference(tmp_path, kwargs, message):
    truth = write(tmp_path / "t.tif", kwargs.pop("data"), **kwargs)
    with pytest.raises(InputError, match=message):
        evaluate(write(tmp_path / "p.tif", PREDICTION), truth)


def test_unknown_excluded_class_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown class 'tree'"):
        evaluate(
            write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", TRUTH), exclude_classes=["tree"]
        )


def test_confusion_csv_is_headed_by_class_names(tmp_path):
    result = evaluate(write(tmp_path / "p.tif", PREDICTION), write(tmp_path / "t.tif", TRUTH))
    path = write_confusion_csv(result, tmp_path / "c.csv")
    assert path.read_text().splitlines() == ["truth \\ prediction,0,1,2", "0,3,1,0", "1,0,3,1", "2,1,1,6"]


def independent_scores(truth: np.ndarray, prediction: np.ndarray, k: int) -> tuple[np.ndarray, float, list]:
    """Pixel counting with boolean masks, sharing no code with geoseg.metrics."""
    confusion = np.array(
        [[np.count_nonzero((truth == i) & (prediction == j)) for j in range(k)] for i in range(k)]
    )
    oa = np.trace(confusion) / confusion.sum()
    ious = []
    for c in range(k):
        union = np.count_nonzero((truth == c) | (prediction == c))
        ious.append(np.count_nonzero((truth == c) & (prediction == c)) / union if union else None)
    return confusion, oa, ious


def test_real_isprs_rasters_match_an_independent_count_in_small_blocks(shared_data, tmp_path):
    """Potsdam ground truth scored against the Vaihingen ground truth used as a 'prediction' (both 512²)."""
    truth_path = shared_data / "labeled" / "potsdam" / "label_2_10_0_0_512_512.png"
    other_path = shared_data / "labeled" / "vaihingen" / "label_area1_0_0_512_512.png"
    with rasterio.open(truth_path) as src:
        truth = src.read(1).astype(int) - 1  # 0 = boundary -> -1
    with rasterio.open(other_path) as src:
        other = src.read(1).astype(int) - 1
    prediction = np.where(other < 0, 255, other).astype(np.uint8)
    pred_path = write(tmp_path / "p.tif", prediction, crs=None, nodata=255)
    result = evaluate(pred_path, truth_path, preset="potsdam", label_offset=1, block_size=100)
    valid = (truth >= 0) & (prediction != 255)
    confusion, oa, ious = independent_scores(truth[valid], prediction[valid].astype(int), 6)
    assert result.confusion.tolist() == confusion.tolist()
    assert result.pixels_evaluated == int(valid.sum())
    assert result.pixels_ignored == 512 * 512 - int(valid.sum())
    assert math.isclose(result.overall_accuracy, oa)
    for c, iou in zip(result.per_class, ious, strict=True):
        assert (math.isnan(c.iou) and iou is None) or math.isclose(c.iou, iou)
    assert [c.pixels for c in result.per_class] == confusion.sum(axis=1).tolist()


def test_real_loveda_labels_decode_to_the_published_class_counts(shared_data, tmp_path):
    truth_path = shared_data / "labeled" / "loveda" / "label_2.png"
    with rasterio.open(truth_path) as src:
        prediction = np.full((src.height, src.width), 6, dtype=np.uint8)  # everything 'agricultural'
    result = evaluate(
        write(tmp_path / "p.tif", prediction, crs=None), truth_path, preset="loveda", label_offset=1
    )
    # PROVENANCE.md: image 2 holds raw classes {1, 4, 6, 7} -> background, water, forest, agricultural
    assert [c.pixels for c in result.per_class] == [8244, 0, 0, 29109, 0, 914057, 97166]
    assert math.isclose(result.overall_accuracy, 97166 / (1024 * 1024))


def test_prediction_naming_other_classes_than_the_preset_is_refused_not_scored(tmp_path):
    loveda = preset_card("loveda")  # seven classes: background, building, road, ...
    prediction = write(
        tmp_path / "p.tif", PREDICTION, classes=(loveda.class_names, [c.color for c in loveda.classes])
    )
    truth = write(tmp_path / "t.tif", TRUTH)
    with pytest.raises(InputError, match=r"p\.tif: its 7 classes \(background, building, road.*not the 6"):
        evaluate(prediction, truth, preset="potsdam")
    result = evaluate(prediction, truth, preset="loveda")  # the same classes: scored as before
    assert result.class_names == loveda.class_names
    assert result.confusion[:3, :3].tolist() == [[3, 1, 0], [0, 3, 1], [1, 1, 6]]


def test_palette_truth_in_its_own_colour_order_is_decoded_by_colour_not_by_stored_value(tmp_path):
    card = preset_card("potsdam")
    colors = [tuple(c.color) for c in card.classes]
    order = [5, 2, 0, 1, 3, 4]  # stored value k holds class order[k]
    stored = np.array([order.index(v) for v in TRUTH.ravel()], dtype=np.uint8).reshape(TRUTH.shape)
    stored[0, 0] = 9  # a black entry: ignored, as in colour labels
    table = {k: (*colors[order[k]], 255) if k < 6 else (0, 0, 0, 255) for k in range(256)}
    path = write(tmp_path / "palette.tif", stored, colormap=table)
    result = evaluate(write(tmp_path / "p.tif", PREDICTION), path, preset="potsdam")
    assert result.confusion[:3, :3].tolist() == [[2, 1, 0], [0, 3, 1], [1, 1, 6]]
    assert result.pixels_evaluated == 15 and result.pixels_ignored == 1


def test_class_raster_with_geoseg_colour_table_as_truth_is_still_read_by_index(tmp_path):
    card = preset_card("uavid")  # its clutter class is black, as the unused colour-table entries
    colors = [tuple(c.color) for c in card.classes]
    truth = write(tmp_path / "t.tif", TRUTH, nodata=255, classes=(card.class_names, colors))
    prediction = write(tmp_path / "p.tif", PREDICTION, classes=(card.class_names, colors))
    result = evaluate(prediction, truth, preset="uavid")
    assert result.confusion[:3, :3].tolist() == [[3, 1, 0], [0, 3, 1], [1, 1, 6]]


def test_areas_are_true_areas_on_the_ellipsoid_and_weight_the_overall_accuracy(tmp_path):
    """1° pixels from 60° to 64° north: a pixel's area shrinks with latitude, so class areas are not
    pixel counts and area-weighted accuracy differs from the pixel one."""
    import shapely
    from affine import Affine

    from geoseg.evaluation import evaluate
    from geoseg.vector.area import GroundArea

    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], dtype=np.uint8)
    predicted = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 2], [2, 2, 2, 2]], dtype=np.uint8)
    transform = Affine(1.0, 0, 10.0, 0, -1.0, 64.0)
    paths = []
    for name, data in (("p.tif", predicted), ("t.tif", truth)):
        paths.append(write_geotiff(tmp_path / name, data, crs="EPSG:4326", transform=transform))
    result = evaluate(*paths)
    areas = result.to_dict()["areas"]
    ground = GroundArea(rasterio.crs.CRS.from_epsg(4326), transform, 4, 4)
    row_area = ground.areas(np.array([shapely.box(10, 64 - r - 1, 14, 64 - r) for r in range(4)])) / 4
    # class 2 (rows 2-3): eight pixels; its true area, polygon by polygon (the vectorizer's areas)
    reference = areas["per_class"]["2"]["reference"]
    assert reference == pytest.approx(4 * (row_area[2] + row_area[3]), rel=1e-6)
    assert areas["confusion_ha"][2][2] == pytest.approx(areas["confusion_m2"][2][2] / 1e4)
    mapped_1 = 3 * row_area[0] + 1 * row_area[1]  # predicted class 1: (0,1..3), (1,2)
    assert areas["per_class"]["1"]["mapped"] == pytest.approx(mapped_1, rel=1e-6)
    correct = 3 * row_area[0] + 3 * row_area[1] + 3 * row_area[2] + 4 * row_area[3]
    assert areas["area_weighted_overall_accuracy"] == pytest.approx(correct / (4 * row_area.sum()), rel=1e-6)
    assert result.overall_accuracy == 13 / 16
    assert areas["area_weighted_overall_accuracy"] != pytest.approx(13 / 16, rel=1e-3)


def test_evaluate_reads_a_class_raster_whose_alpha_band_is_its_mask(tmp_path):
    """vectorize took a class band with an alpha band; evaluate refused it ('a class raster has 1 band, this
    one has 2')."""
    prediction, classes, alpha = class_raster_with_alpha(tmp_path)
    truth = write_geotiff(tmp_path / "truth.tif", classes[None])

    result = evaluate(prediction, truth).to_dict()

    evaluated, ignored, _ = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert result["overall_accuracy"] == 1.0
