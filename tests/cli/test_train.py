"""``geoseg train`` on the command line: a short real run, and one-line errors before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import classes_and_transparency, loveda_corners, write_geotiff, write_png

from geoseg.cli.main import cli


@pytest.fixture(scope="module")
def tiles(shared_data, tmp_path_factory) -> Path:
    """96² corners of the real LoveDA tiles 0 and 1."""
    return loveda_corners(shared_data, tmp_path_factory.mktemp("loveda_cli"), 96)


def run(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def base_args(tiles: Path, output: Path) -> list:
    return [
        "--images", tiles / "image_0.png", "--labels", tiles / "label_0.png",
        "--preset", "loveda", "--label-offset", "1", "--backbone", "resnet18",
        "--crop", "64", "--batch-size", "2", "-o", output,
    ]  # fmt: skip


@pytest.mark.slow
def test_short_run_writes_a_checkpoint_that_predict_can_use(tiles, tmp_path):
    output = tmp_path / "m.safetensors"
    result = run(
        *base_args(tiles, output), "--steps", "2", "--val-images", tiles / "image_1.png",
        "--val-labels", tiles / "label_1.png", "--json", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["output"] == str(output) and record["steps"] == 2
    assert record["state"] == str(tmp_path / "m.state.pt")
    assert set(record["validation"]) >= {"overall_accuracy", "mean_f1", "mean_iou", "per_class_iou"}
    info = CliRunner().invoke(cli, ["info", str(output), "--json"])
    assert info.exit_code == 0 and json.loads(info.output)["backbone"] == "resnet18"
    try:
        import geoseg.cli.predict  # noqa: F401
    except ImportError:
        return  # predict is not part of this checkout yet
    classes = tmp_path / "classes.tif"
    predicted = CliRunner().invoke(
        cli,
        [
            "predict",
            str(tiles / "image_1.png"),
            "-o",
            str(classes),
            "-m",
            str(output),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    with rasterio.open(classes) as src:
        assert src.read(1).max() < 7


def test_unpaired_files_fail_before_training(tiles, tmp_path):
    result = run(*base_args(tiles, tmp_path / "m.safetensors"), "--labels", tiles / "label_1.png")
    assert result.exit_code == 1
    assert "unpaired files (labels without an image: label_1.png)" in result.output
    assert not (tmp_path / "m.safetensors").exists()


def test_labels_outside_the_classes_fail_with_the_offset_hint(tiles, tmp_path):
    with rasterio.open(tiles / "label_0.png") as src:
        labels = src.read(1)
    labels[5, 7] = 9  # LoveDA has 7 classes: stored 1..7, so 9 is no class even after the offset
    write_png(tmp_path / "label_0.png", labels)
    args = base_args(tiles, tmp_path / "m.safetensors")
    args[args.index("--labels") + 1] = tmp_path / "label_0.png"
    result = run(*args)
    assert result.exit_code == 1
    assert (
        "label_0.png: 1 label pixels hold value(s) 9 that, less the label offset 1, fall outside"
        in result.output
    )
    assert not (tmp_path / "m.safetensors").exists()


def test_crop_larger_than_the_image_fails(tiles, tmp_path):
    args = base_args(tiles, tmp_path / "m.safetensors")
    args[args.index("--crop") + 1] = "128"
    result = run(*args)
    assert result.exit_code == 1
    assert "image_0.png: is 96×96 pixels, smaller than the 128-pixel crop" in result.output


def test_crop_not_a_multiple_of_32_fails(tiles, tmp_path):
    args = base_args(tiles, tmp_path / "m.safetensors")
    args[args.index("--crop") + 1] = "50"
    result = run(*args)
    assert result.exit_code == 1
    assert "--crop 50: give a positive multiple of 32" in result.output


def test_classes_must_be_named(tiles, tmp_path):
    args = base_args(tiles, tmp_path / "m.safetensors")
    del args[args.index("--preset") : args.index("--preset") + 2]
    result = run(*args)
    assert result.exit_code == 2
    assert "name the classes with --preset NAME or --card FILE" in result.output


def test_existing_output_needs_overwrite(tiles, tmp_path):
    output = tmp_path / "m.safetensors"
    output.write_bytes(b"")
    result = run(*base_args(tiles, output))
    assert result.exit_code == 1
    assert "m.safetensors: output exists; pass --overwrite" in result.output


def test_missing_state_file_for_resume(tiles, tmp_path):
    result = run(*base_args(tiles, tmp_path / "m.safetensors"), "--resume", tmp_path / "gone.state.pt")
    assert result.exit_code == 1
    assert "gone.state.pt: state file not found" in result.output


def test_help_shows_every_example_command_with_its_line_continuations():
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--architecture maresunet \\\n" in result.output
    assert "maresunet         --init" not in result.output


@pytest.mark.parametrize(
    "architecture, backbone, message",
    [
        ("macunet", "resnet18", "--backbone resnet18 does not fit --architecture macunet, which has none"),
        (
            "maresunet",
            "resnet50",
            "--backbone resnet50 does not fit --architecture maresunet, whose backbone is resnet34",
        ),
    ],
)
def test_backbone_that_does_not_fit_the_architecture_is_a_usage_error_naming_both_options(
    tmp_path, architecture, backbone, message
):
    args = ["train", "--images", str(tmp_path), "--labels", str(tmp_path), "--preset", "loveda"]
    args += ["--architecture", architecture, "--backbone", backbone, "-o", str(tmp_path / "m.safetensors")]
    result = CliRunner().invoke(cli, args, terminal_width=300)
    assert result.exit_code == 2
    assert message in result.output
    assert "card:" not in result.output
    assert not (tmp_path / "m.safetensors").exists()


@pytest.fixture(scope="module")
def sparse_labels(tiles, tmp_path_factory) -> Path:
    """LoveDA image 0's 96² corner with labels in its top-left 12² only (0: no data, ignored)."""
    folder = tmp_path_factory.mktemp("sparse")
    for name in ("image_0.png", "image_1.png"):
        (folder / name).write_bytes((tiles / name).read_bytes())
    label = np.zeros((96, 96), np.uint8)
    label[:12, :12] = 3
    write_png(folder / "label_0.png", label)
    write_png(folder / "label_1.png", label)
    return folder


SKIPPED = 114  # seed 0: 6 crops with labelled pixels drawn among 120


@pytest.mark.slow
def test_training_windows_whose_labels_are_all_ignored_are_skipped_and_counted(sparse_labels, tmp_path):
    output = tmp_path / "m.safetensors"
    args = base_args(sparse_labels, output)
    args[args.index("--crop") + 1] = 32
    result = run(
        *args, "--steps", "3", "--device", "cpu", "--json",
        "--val-images", sparse_labels / "image_1.png", "--val-labels", sparse_labels / "label_1.png",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no matplotlib warning from curves of zero losses
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["steps"] == 3
    assert record["skipped_windows"] == SKIPPED
    assert record["first_loss"] > 0 and record["last_loss"] > 0  # not -0.0: every step saw labelled pixels
    text = run(*args, "--steps", "3", "--device", "cpu", "--overwrite", "--quiet")
    assert text.exit_code == 0, text.output
    assert f"skipped {SKIPPED} training windows whose labels were all ignored" in text.stdout.splitlines()


def test_a_run_without_any_labelled_pixel_is_refused_in_one_line_before_the_first_step(tiles, tmp_path):
    write_png(tmp_path / "label_0.png", np.zeros((96, 96), np.uint8))  # 0: no data under --label-offset 1
    (tmp_path / "image_0.png").write_bytes((tiles / "image_0.png").read_bytes())
    result = run(*base_args(tmp_path, tmp_path / "m.safetensors"), "--steps", "1", "--device", "cpu")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {tmp_path / 'label_0.png'}: every pixel is ignored or invalid in its image; check "
        "--label-offset N, --ignore-index N and the image's nodata/mask"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_0.png", "label_0.png"]


def test_train_with_a_truncated_label_is_one_line_naming_the_file(tmp_path):
    """``train`` gave 'Error: RasterioIOError: Read failed. See previous exception for details.' for a label
    raster cut short: labels are read by one function, which now names the file for evaluate and train."""
    classes, _ = classes_and_transparency(64, 64)
    image = write_geotiff(tmp_path / "a.tif", np.full((3, 64, 64), 100, np.uint8))
    whole = write_geotiff(tmp_path / "whole.tif", classes[None]).read_bytes()
    label = tmp_path / "a_mask.tif"
    label.write_bytes(whole[: len(whole) // 2])
    args = ["train", "--images", str(image), "--labels", str(label), "--preset", "potsdam", "--crop", "32"]

    result = CliRunner().invoke(cli, [*args, "--steps", "1", "-o", str(tmp_path / "m.safetensors"), "-q"])

    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {label}: read failed (")
