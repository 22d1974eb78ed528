"""The evaluation picture (``geoseg evaluate --plot``): matrix cells and score bars measured in pixels."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import UTM, write_geotiff
from matplotlib import colormaps
from matplotlib.image import imread
from PIL import Image

from geoseg.cli.main import cli
from geoseg.evaluation import evaluate
from geoseg.plots.evaluation import plot_evaluation

COLORS = [(230, 25, 75), (0, 130, 200)]
NAMES = ["building", "water"]
DARKEST = tuple(round(255 * v) for v in colormaps["Blues"](1.0)[:3])  # a row entirely in one cell


def pair(tmp_path, name, truth, prediction):
    """A prediction naming its classes as geoseg writes them, and a truth without names, on one grid."""
    named = write_geotiff(
        tmp_path / f"{name}_pred.tif", prediction, dtype="uint8", classes=(NAMES, COLORS), **UTM
    )
    return named, write_geotiff(tmp_path / f"{name}_truth.tif", truth, dtype="uint8", **UTM)


def pixels_of(path, color) -> int:
    image = (imread(path)[..., :3] * 255).round().astype(np.uint8)
    return int(np.all(image == color, axis=-1).sum())


@pytest.fixture
def rasters(tmp_path):
    truth = np.zeros((10, 10), np.uint8)
    truth[5:] = 1
    confused = truth.copy()
    confused[5:, :5] = 0  # half of class 1 predicted as class 0: F1 0.8 and 2/3
    return pair(tmp_path, "perfect", truth, truth), pair(tmp_path, "confused", truth, confused)


def test_matrix_is_row_normalised_and_bars_are_as_long_as_the_scores(rasters, tmp_path):
    perfect = evaluate(*rasters[0])
    confused = evaluate(*rasters[1])
    assert confused.class_colors == COLORS
    a = plot_evaluation(perfect, tmp_path / "perfect.png")
    b = plot_evaluation(confused, tmp_path / "confused.png")
    assert Image.open(a).size == Image.open(b).size
    # two rows entirely on the diagonal, then one: the darkest cell colour covers half the area
    assert pixels_of(b, DARKEST) / pixels_of(a, DARKEST) == pytest.approx(0.5, rel=0.1)
    # solid F1 bars in the class colours, as long as the scores (1 and 1, then 0.8 and 2/3)
    assert pixels_of(a, COLORS[1]) / pixels_of(a, COLORS[0]) == pytest.approx(1.0, rel=0.03)
    assert pixels_of(b, COLORS[0]) / pixels_of(a, COLORS[0]) == pytest.approx(0.8, rel=0.03)
    assert pixels_of(b, COLORS[1]) / pixels_of(a, COLORS[1]) == pytest.approx(2 / 3, rel=0.03)


def test_png_names_files_by_base_name_only(rasters, tmp_path):
    path = plot_evaluation(evaluate(*rasters[0]), tmp_path / "plot.png")
    info = Image.open(path).info
    assert info["Title"] == "geoseg evaluation" and set(info) <= {"Title", "Software", "dpi"}
    assert str(tmp_path).encode() not in path.read_bytes()


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def test_cli_writes_the_plot_and_reports_it(rasters, tmp_path):
    plot = tmp_path / "accuracy.png"
    result = run(*rasters[1], "--plot", plot, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["plot"] == str(plot)
    assert pixels_of(plot, COLORS[0]) > 0


@pytest.mark.parametrize(
    ("name", "exists", "message"),
    [
        ("accuracy.jpg", False, "accuracy.jpg: pictures are written as PNG; name the file .png"),
        ("accuracy.png", True, "accuracy.png: output exists; pass --overwrite to replace it"),
        ("missing/accuracy.png", False, "folder"),
    ],
)
def test_cli_refuses_a_bad_plot_name_before_evaluating(rasters, tmp_path, name, exists, message):
    plot = tmp_path / name
    if exists:
        plot.write_bytes(b"old")
    result = run(*rasters[1], "--plot", plot, "--json")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1  # one line, and no JSON report: nothing was evaluated
    assert plot.read_bytes() == b"old" if exists else not plot.exists()


def test_cli_without_matplotlib_says_how_to_install_it(rasters, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(*rasters[1], "--plot", tmp_path / "accuracy.png")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: drawing pictures needs matplotlib, which is not installed; install it with: "
        "pip install 'geoseg[plot]'"
    )
    assert not (tmp_path / "accuracy.png").exists()


def test_title_says_which_classes_the_means_leave_out(rasters, tmp_path, monkeypatch):
    import geoseg.plots.evaluation as module

    titles = []
    real_save = module.save_png
    monkeypatch.setattr(
        module,
        "save_png",
        lambda figure, *a, **k: titles.append(figure.get_suptitle()) or real_save(figure, *a, **k),
    )
    result = evaluate(*rasters[1], exclude_classes=["water"])  # means over building only: F1 80 %, IoU 66.7 %
    plot_evaluation(result, tmp_path / "excluded.png")
    plot_evaluation(evaluate(*rasters[1]), tmp_path / "all.png")
    assert "mean F1 without water 80.0 % · mIoU without water 66.7 %" in titles[0]
    assert "mean F1 73.3 % · mIoU 58.3 %" in titles[1]


def test_evaluation_plot_of_many_classes_stays_a_picture_of_bounded_size(tmp_path):
    """The matrix grew 62 px per class: a class raster with 255 values (no names) gave a 513-megapixel PNG
    after ~4 minutes, which image viewers and PIL refuse as a decompression bomb."""
    from PIL import Image

    from geoseg.plots.evaluation import MAX_MATRIX_PX, plot_evaluation

    values = (np.arange(60 * 40) % 60).astype(np.uint8).reshape(1, 60, 40)
    prediction = write_geotiff(tmp_path / "classes.tif", values)
    truth = write_geotiff(tmp_path / "truth.tif", np.roll(values, 1, axis=2))
    result = evaluate(prediction, truth)
    assert len(result.class_names) == 60

    path = plot_evaluation(result, tmp_path / "scores.png")

    width, _ = Image.open(path).size
    assert width == 2 * MAX_MATRIX_PX + 420
