"""``geoseg quicklook`` on the command line: the picture, --json, and one-line errors that leave nothing."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import (
    COLORS,
    NAMES,
    UTM,
    blocky_classes,
    classes_and_transparency,
    write_classes,
    write_geotiff,
    write_scene,
    write_small_checkpoint,
)
from PIL import Image

from geoseg.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, ["quicklook", *map(str, args)])


@pytest.fixture
def classes(tmp_path):
    return write_classes(tmp_path / "classes.tif", blocky_classes(400, 600))


def test_writes_the_png_and_reports_it_as_json(classes, tmp_path):
    output = tmp_path / "map.png"
    result = run(classes, "-o", output, "--max-size", 500, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["output"] == str(output) and record["metres_per_pixel"] > 0.5
    assert list(record["class_fractions"]) == NAMES
    assert sum(record["class_fractions"].values()) == pytest.approx(1.0, abs=1e-5)
    image = Image.open(output)
    assert image.mode == "RGBA" and (record["width"], record["height"]) == image.size
    assert max(image.size) <= 500


def test_plain_output_names_the_picture(classes, tmp_path):
    result = run(classes, "-o", tmp_path / "map.png")
    assert result.exit_code == 0, result.output
    width, height = Image.open(tmp_path / "map.png").size
    assert result.output == f"{classes} -> {tmp_path / 'map.png'} ({width}x{height} px)\n"


def test_over_draws_on_the_image(classes, tmp_path):
    image = write_scene(tmp_path / "scene.tif", width=600, height=400, **UTM)
    assert image.shape == (3, 400, 600)
    result = run(classes, "-o", tmp_path / "over.png", "--over", tmp_path / "scene.tif")
    assert result.exit_code == 0, result.output
    drawn = np.asarray(Image.open(tmp_path / "over.png"))
    assert not any(np.all(drawn[..., :3] == c, axis=-1).sum() > 1000 for c in COLORS)  # blended, not flat


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_scene(p, 40, 30, count=1, dtype="float32", **UTM), "float32 values; quicklook"),
        (lambda p: write_scene(p, 40, 30, count=3, **UTM), "has 3 bands; quicklook needs a single-band"),
        (lambda p: p.write_bytes(b"not a raster"), "not a raster GDAL can read"),
    ],
)
def test_not_a_class_raster_is_one_line_and_exit_1(tmp_path, make, message):
    source = tmp_path / "input.tif"
    make(source)
    result = run(source, "-o", tmp_path / "map.png")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {source}: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.tif"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_is_one_line_and_exit_1(classes, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = run(classes, "-o", folder / "map.png")
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 1 and "is not writable" in result.output
    assert list(folder.iterdir()) == []


def test_missing_output_folder_is_one_line_and_exit_1(classes, tmp_path):
    result = run(classes, "-o", tmp_path / "nowhere" / "map.png")
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"Error: {tmp_path / 'nowhere' / 'map.png'}: folder {tmp_path / 'nowhere'} does not exist"
    )


def test_missing_matplotlib_is_one_line_and_exit_1(classes, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run(classes, "-o", tmp_path / "map.png")
    assert result.exit_code == 1
    assert result.output.strip().endswith("install it with: pip install 'geoseg[plot]'")
    assert not (tmp_path / "map.png").exists()


def test_too_small_max_size_is_a_usage_error(classes, tmp_path):
    result = run(classes, "-o", tmp_path / "map.png", "--max-size", 100)
    assert result.exit_code == 2 and "--max-size" in result.output


def test_quicklook_does_not_import_torch(classes, tmp_path):
    """In a fresh interpreter: pictures of thousands of class rasters should not pay for torch's import."""
    import subprocess

    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from geoseg.cli.main import cli\n"
        "result = CliRunner().invoke(cli, sys.argv[1:])\n"
        "print(result.exit_code, 'torch' in sys.modules)\n"
    )
    args = ["quicklook", str(classes), "-o", str(tmp_path / "map.png")]
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stdout + done.stderr
    assert (tmp_path / "map.png").is_file()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random MANet (ResNet-18) with LoveDA's classes and 64 px tiles."""
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


def test_predict_quicklook_writes_stem_quicklook_png_beside_the_classes(checkpoint, tmp_path):
    write_scene(tmp_path / "scene.tif", width=96, height=64, **UTM)
    args = [
        "predict",
        tmp_path / "scene.tif",
        "-o",
        tmp_path / "map.tif",
        "-m",
        checkpoint,
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, [*map(str, args), "--quicklook", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["outputs"]["quicklook"] == str(tmp_path / "map.quicklook.png")
    assert Image.open(tmp_path / "map.quicklook.png").mode == "RGBA"


def test_predict_quicklook_that_exists_fails_before_any_work(checkpoint, tmp_path):
    write_scene(tmp_path / "scene.tif", width=96, height=64, **UTM)
    (tmp_path / "map.quicklook.png").write_bytes(b"old")
    args = ["predict", tmp_path / "scene.tif", "-o", tmp_path / "map.tif", "-m", checkpoint, "--quicklook"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {tmp_path / 'map.quicklook.png'}: output exists; pass --overwrite to replace it"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.quicklook.png", "scene.tif"]


def test_png_class_raster_drawn_onto_itself_is_refused_and_kept(tmp_path):
    import rasterio

    source = tmp_path / "labels.png"
    with rasterio.open(source, "w", driver="PNG", width=40, height=30, count=1, dtype="uint8") as dst:
        dst.write(np.arange(1200, dtype=np.uint8).reshape(30, 40) % 3, 1)
    before = source.read_bytes()
    result = run(source, "-o", source, "--overwrite")
    assert result.exit_code == 1
    assert "is also an input of this command" in result.output
    assert source.read_bytes() == before


def test_quicklook_of_a_truncated_class_raster_is_one_line_naming_the_file(tmp_path):
    """A class raster cut short (a copy interrupted) gave 'Error: RasterioIOError: Read failed. See previous
    exception for details.', naming neither the file nor the cause; vectorize and evaluate named both."""
    classes, _ = classes_and_transparency(64, 64)
    whole = write_geotiff(tmp_path / "whole.tif", classes[None]).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole[: len(whole) // 2])

    result = CliRunner().invoke(cli, ["quicklook", str(cut), "-o", str(tmp_path / "q.png")])

    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {cut}: read failed (") and "TIFFReadEncodedStrip() failed" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif", "whole.tif"]
