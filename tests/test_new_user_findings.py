"""Faults a new user found in the commands around predict (evaluate, train, vectorize, convert), each pinned
by the test that failed before its fix: label rasters whose alpha band is not the fourth of four, masked
label pixels holding any value, outputs that were one of the inputs, and outputs of one command that were
not one unit."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.enums import ColorInterp

from geoseg.cli.main import cli
from geoseg.evaluation import evaluate
from geoseg.model.presets import preset_card

UTM = "EPSG:32633"
NORTH_UP = Affine(0.5, 0.0, 400000.0, 0.0, -0.5, 5800000.0)
POTSDAM = [c.color for c in preset_card("potsdam").classes]


def write(path, data: np.ndarray, *, colorinterp=None, mask=None, **profile):
    """A GeoTIFF of ``data`` (C, H, W) on the test grid; ``mask`` (H, W) as an internal mask."""
    count, height, width = data.shape
    base = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name)
    base.update({"crs": UTM, "transform": NORTH_UP, **profile})
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **base) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
        if mask is not None:
            dst.write_mask(mask)
    return path


def classes_and_transparency(height: int = 12, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Class indices 0..3 in vertical stripes, and an alpha band that hides the left quarter."""
    classes = (np.arange(width)[None, :] * 4 // width).repeat(height, 0).astype(np.uint8)
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, : width // 4] = 0
    return classes, alpha


def expected_scores(classes: np.ndarray, alpha: np.ndarray) -> tuple[int, int, list[int]]:
    visible = alpha > 0
    return int(visible.sum()), int((~visible).sum()), np.bincount(classes[visible], minlength=6).tolist()


# --- label rasters: every alpha band is a mask, masked pixels are never decoded -------------------------


@pytest.mark.parametrize("alpha_first", [False, True], ids=["R,G,B,A", "A,R,G,B"])
def test_colour_truth_with_its_alpha_band_anywhere_is_decoded_by_colour_and_masked(tmp_path, alpha_first):
    """ISPRS-style colour truth with an alpha band stored first: its alpha, red and green were read as the
    colour (an error about unknown colours, or wrong classes); transparent pixels hold a non-class colour."""
    classes, alpha = classes_and_transparency()
    rgb = np.array(POTSDAM, np.uint8)[classes].transpose(2, 0, 1)
    rgb[:, alpha == 0] = np.array([255, 0, 255], np.uint8)[:, None]  # no class has it: must stay unread
    bands = [alpha[None], rgb] if alpha_first else [rgb, alpha[None]]
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    interp = [ColorInterp.alpha, *interp] if alpha_first else [*interp, ColorInterp.alpha]
    truth = write(tmp_path / "truth.tif", np.concatenate(bands), colorinterp=interp)
    prediction = write(tmp_path / "classes.tif", classes[None])

    result = evaluate(prediction, truth, preset="potsdam").to_dict()

    evaluated, ignored, counts = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert [c["pixels"] for c in result["per_class"]] == counts
    assert result["overall_accuracy"] == 1.0


def test_index_truth_with_a_grey_and_alpha_band_is_read_as_indices_masked_by_its_alpha(tmp_path):
    """A one-band index label with an alpha band (a grey+alpha PNG or TIFF) was refused: 'a label raster
    has 1 band (class indices) or 3 bands (colours, 4 with alpha), not 2'."""
    classes, alpha = classes_and_transparency()
    stored = np.where(alpha > 0, classes, 200).astype(np.uint8)  # 200: no class, but transparent
    truth = write(tmp_path / "truth.tif", np.stack([stored, alpha]), alpha="YES")  # GDAL: band 2 is alpha
    prediction = write(tmp_path / "classes.tif", classes[None])

    result = evaluate(prediction, truth, preset="potsdam").to_dict()

    evaluated, ignored, counts = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert [c["pixels"] for c in result["per_class"]] == counts


def test_index_truth_pixels_its_internal_mask_leaves_out_may_hold_any_value(tmp_path):
    """Masked pixels were decoded before the mask was applied, so a value outside the classes under the
    mask failed the whole evaluation ('label pixels hold value(s) 99 ... outside the 6 classes')."""
    classes, alpha = classes_and_transparency()
    stored = np.where(alpha > 0, classes, 99).astype(np.uint8)
    truth = write(tmp_path / "truth.tif", stored[None], mask=alpha)
    prediction = write(tmp_path / "classes.tif", classes[None])

    result = evaluate(prediction, truth, preset="potsdam").to_dict()

    evaluated, ignored, counts = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert [c["pixels"] for c in result["per_class"]] == counts


def test_training_pairs_read_colour_labels_with_the_alpha_band_first(tmp_path):
    """``train`` decodes labels with the same function: the alpha-first colour label trains on its colours,
    and its transparent pixels count in no class."""
    from geoseg.labels.raster import LabelEncoding
    from geoseg.training.dataset import check_pairs

    classes, alpha = classes_and_transparency(32, 32)
    rgb = np.array(POTSDAM, np.uint8)[classes].transpose(2, 0, 1)
    rgb[:, alpha == 0] = 0
    image = write(tmp_path / "a.tif", np.full((3, 32, 32), 100, np.uint8))
    label = write(
        tmp_path / "a_label.tif",
        np.concatenate([alpha[None], rgb]),
        colorinterp=[ColorInterp.alpha, ColorInterp.red, ColorInterp.green, ColorInterp.blue],
    )
    encoding = LabelEncoding(num_classes=6, colors=tuple(tuple(c) for c in POTSDAM))

    (raster,) = check_pairs([(image, label)], encoding, ["red", "green", "blue"], crop=32)

    assert raster.class_pixels.tolist() == expected_scores(classes, alpha)[2]


# --- an output is never one of the inputs ---------------------------------------------------------------


def test_vectorize_refuses_to_write_over_its_input_raster_geopackage(tmp_path):
    """A GeoPackage holds rasters too: ``vectorize classes.gpkg -o classes.gpkg -f`` replaced the class
    raster it was reading by its polygons."""
    from geoseg.errors import OutputError
    from geoseg.vector.vectorize import vectorize

    classes, _ = classes_and_transparency()
    source = write(tmp_path / "classes.gpkg", classes[None].astype(np.uint16), driver="GPKG")
    before = source.read_bytes()

    with pytest.raises(OutputError, match="is also an input"):
        vectorize(source, source, overwrite=True)

    assert source.read_bytes() == before


def test_convert_refuses_to_write_over_its_source(tmp_path):
    """``convert model.safetensors -o model.safetensors -f --preset loveda`` replaced the checkpoint it read
    (and its card, training record and licence with the preset's)."""
    from helpers import write_small_checkpoint

    source = write_small_checkpoint(tmp_path / "model.safetensors")
    before = source.read_bytes()

    result = CliRunner().invoke(cli, ["convert", str(source), "-o", str(source), "-f", "--preset", "loveda"])

    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines()[-1]
        == f"Error: {source}: is also an input of this command; write the output under another name"
    )
    assert source.read_bytes() == before


def test_train_refuses_an_output_that_is_one_of_its_inputs(tmp_path):
    """``train(..., output=image, overwrite=True)`` trained, then wrote the checkpoint over the image it
    trained on (the CLI's .safetensors rule does not protect the API, nor an image named .safetensors)."""
    from geoseg.errors import OutputError
    from geoseg.training.loop import TrainingConfig, train

    classes, _ = classes_and_transparency(32, 32)
    image = write(tmp_path / "a.tif", np.full((3, 32, 32), 100, np.uint8))
    label = write(tmp_path / "a_mask.tif", classes[None])
    before = image.read_bytes()
    config = TrainingConfig(crop=32, batch_size=1, steps=1)

    with pytest.raises(OutputError, match="is also an input of this command"):
        train([image], [label], image, card=preset_card("potsdam"), architecture="macunet", config=config,
              overwrite=True)  # fmt: skip

    assert image.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "a_mask.tif"]


@pytest.mark.parametrize("command", ["convert", "train"])
def test_a_checkpoint_is_never_written_under_an_export_suffix(tmp_path, command):
    """``convert ... -o model.onnx`` wrote a safetensors file that ``info`` and ``predict -m`` then read as
    ONNX ('not a readable ONNX model')."""
    output = tmp_path / "model.onnx"
    args = ["--images", "a.tif", "--labels", "b.tif"] if command == "train" else ["source.pth"]

    result = CliRunner().invoke(cli, [command, *args, "--preset", "loveda", "-o", str(output)])

    assert result.exit_code == 2
    assert (
        "model.onnx: geoseg reads .onnx files as ONNX exports (geoseg export), not as checkpoints"
        in result.output
    )
    assert not output.exists()


# --- evaluate's outputs are one unit ----------------------------------------------------------------------


def evaluate_args(tmp_path) -> list[str]:
    classes, _ = classes_and_transparency()
    prediction = write(tmp_path / "classes.tif", classes[None])
    truth = write(tmp_path / "truth.tif", classes[None])
    return ["evaluate", str(prediction), str(truth), "-q"]


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


# --- class rasters: one check for every command that reads them -----------------------------------------


def class_raster_with_alpha(tmp_path) -> tuple:
    """Classes 0..3 with an alpha band hiding the left quarter, as ``gdal_translate -b 1 -b mask`` writes."""
    classes, alpha = classes_and_transparency()
    path = write(tmp_path / "masked.tif", np.stack([classes, alpha]), alpha="YES")
    return path, classes, alpha


def test_evaluate_reads_a_class_raster_whose_alpha_band_is_its_mask(tmp_path):
    """vectorize took a class band with an alpha band; evaluate refused it ('a class raster has 1 band, this
    one has 2')."""
    prediction, classes, alpha = class_raster_with_alpha(tmp_path)
    truth = write(tmp_path / "truth.tif", classes[None])

    result = evaluate(prediction, truth).to_dict()

    evaluated, ignored, _ = expected_scores(classes, alpha)
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (evaluated, ignored)
    assert result["overall_accuracy"] == 1.0


def test_quicklook_reads_a_class_raster_whose_alpha_band_is_its_mask(tmp_path):
    from geoseg.plots.quicklook import quicklook

    path, classes, alpha = class_raster_with_alpha(tmp_path)

    result = quicklook(path, tmp_path / "q.png")

    shares = {entry.value: entry.share for entry in result.legend if entry.share}
    assert shares == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3})  # class 0 lies under the alpha


def scaled(path, scale: float, offset: float):
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = [scale], [offset]
    return path


@pytest.mark.parametrize("role", ["vectorize", "quicklook", "evaluate prediction", "evaluate truth", "train"])
def test_class_indices_with_a_scale_or_offset_are_refused_not_read_raw(tmp_path, role):
    """A class or label raster with a band offset of 1 shows classes 1..4 in QGIS and gdalinfo's terms, but
    every command read the stored 0..3, silently: scores, polygons and training targets of other classes.
    Class indices carry no unit: the metadata is refused, naming the fix."""
    classes, _ = classes_and_transparency(32, 32)
    plain = write(tmp_path / "plain.tif", classes[None])
    odd = scaled(write(tmp_path / "odd.tif", classes[None]), 1.0, 1.0)
    image = write(tmp_path / "odd_image.tif", np.full((3, 32, 32), 100, np.uint8))
    args = {
        "vectorize": ["vectorize", str(odd), "-o", str(tmp_path / "p.gpkg")],
        "quicklook": ["quicklook", str(odd), "-o", str(tmp_path / "q.png")],
        "evaluate prediction": ["evaluate", str(odd), str(plain)],
        "evaluate truth": ["evaluate", str(plain), str(odd)],
        "train": [
            "train",
            "--images",
            str(image),
            "--labels",
            str(odd),
            "--preset",
            "potsdam",
            "--crop",
            "32",
        ]
        + ["--architecture", "macunet", "--steps", "1", "-o", str(tmp_path / "m.safetensors")],
    }[role]

    result = CliRunner().invoke(cli, [*args, "-q"] if role != "quicklook" else args)

    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {odd}: band 1 has scale 1 and offset 1, but class indices are read as stored; "
        f"remove them (gdal_edit.py -scale 1 -offset 0 {odd}) or apply them first (gdal_translate -unscale)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.tif", "odd_image.tif", "plain.tif"]


def test_quicklook_of_a_truncated_class_raster_is_one_line_naming_the_file(tmp_path):
    """A class raster cut short (a copy interrupted) gave 'Error: RasterioIOError: Read failed. See previous
    exception for details.', naming neither the file nor the cause; vectorize and evaluate named both."""
    classes, _ = classes_and_transparency(64, 64)
    whole = write(tmp_path / "whole.tif", classes[None]).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole[: len(whole) // 2])

    result = CliRunner().invoke(cli, ["quicklook", str(cut), "-o", str(tmp_path / "q.png")])

    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {cut}: read failed (") and "TIFFReadEncodedStrip() failed" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif", "whole.tif"]


def test_train_with_a_truncated_label_is_one_line_naming_the_file(tmp_path):
    """``train`` gave 'Error: RasterioIOError: Read failed. See previous exception for details.' for a label
    raster cut short: labels are read by one function, which now names the file for evaluate and train."""
    classes, _ = classes_and_transparency(64, 64)
    image = write(tmp_path / "a.tif", np.full((3, 64, 64), 100, np.uint8))
    whole = write(tmp_path / "whole.tif", classes[None]).read_bytes()
    label = tmp_path / "a_mask.tif"
    label.write_bytes(whole[: len(whole) // 2])
    args = ["train", "--images", str(image), "--labels", str(label), "--preset", "potsdam", "--crop", "32"]

    result = CliRunner().invoke(cli, [*args, "--steps", "1", "-o", str(tmp_path / "m.safetensors"), "-q"])

    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {label}: read failed (")


def test_evaluate_of_a_prediction_without_valid_pixels_names_both_files(tmp_path):
    """An all-nodata prediction was reported as 'truth.tif: no pixels to compare', naming the file that was
    fine."""
    classes, _ = classes_and_transparency()
    prediction = write(tmp_path / "classes.tif", np.full((1, *classes.shape), 255, np.uint8), nodata=255)
    truth = write(tmp_path / "truth.tif", classes[None])

    result = CliRunner().invoke(cli, ["evaluate", str(prediction), str(truth), "-q"])

    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {prediction} vs {truth}: no pixels to compare (every pixel is ignored in the truth or "
        "nodata in the prediction); check --ignore-index/--label-offset and the prediction's nodata"
    )


# --- vectorize: one ring orientation whatever the grid ------------------------------------------------


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
    source = write(tmp_path / "classes.tif", classes, transform=transform)

    vectorize(source, tmp_path / "p.gpkg")

    _, _, wkb, fields = read(tmp_path / "p.gpkg", return_fids=True)
    polygons = dict(zip(fields[0].tolist(), shapely.from_wkb(wkb), strict=True))
    assert [polygons[c].exterior.is_ccw for c in (0, 1)] == [True, True]
    assert [ring.is_ccw for ring in polygons[0].interiors] == [False]
    assert polygons[0].area == 144 * 0.25 - 16 * 0.25


def test_overwriting_a_shapefile_with_one_without_crs_leaves_no_stale_prj(tmp_path):
    """The old .prj stayed beside the new .shp: polygons in pixel coordinates were read back in UTM."""
    import pyogrio

    from geoseg.vector.vectorize import vectorize

    classes, _ = classes_and_transparency()
    placed = write(tmp_path / "placed.tif", classes[None])
    unplaced = tmp_path / "unplaced.tif"
    with rasterio.open(unplaced, "w", driver="GTiff", width=16, height=12, count=1, dtype="uint8") as dst:
        dst.write(classes[None])
    output = tmp_path / "out" / "map.shp"
    output.parent.mkdir()
    vectorize(placed, output)

    with pytest.warns(UserWarning, match="polygons are in pixel coordinates"):
        vectorize(unplaced, output, overwrite=True)

    assert sorted(p.suffix for p in output.parent.iterdir()) == [".cpg", ".dbf", ".shp", ".shx"]
    assert pyogrio.read_info(output)["crs"] is None
    assert pyogrio.read_info(output)["total_bounds"] == (0.0, 0.0, 16.0, 12.0)


# --- evaluate --plot: a picture of bounded size -------------------------------------------------------


def test_evaluation_plot_of_many_classes_stays_a_picture_of_bounded_size(tmp_path):
    """The matrix grew 62 px per class: a class raster with 255 values (no names) gave a 513-megapixel PNG
    after ~4 minutes, which image viewers and PIL refuse as a decompression bomb."""
    from PIL import Image

    from geoseg.plots.evaluation import MAX_MATRIX_PX, plot_evaluation

    values = (np.arange(60 * 40) % 60).astype(np.uint8).reshape(1, 60, 40)
    prediction = write(tmp_path / "classes.tif", values)
    truth = write(tmp_path / "truth.tif", np.roll(values, 1, axis=2))
    result = evaluate(prediction, truth)
    assert len(result.class_names) == 60

    path = plot_evaluation(result, tmp_path / "scores.png")

    width, _ = Image.open(path).size
    assert width == 2 * MAX_MATRIX_PX + 420
