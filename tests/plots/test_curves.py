"""Training curves: drawn from the loop's history after every epoch, through resume, by ``geoseg train``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import loveda_corners
from matplotlib.image import imread
from PIL import Image

from geoseg.cli.main import cli
from geoseg.model.presets import preset_card
from geoseg.plots.curves import plot_training_curves
from geoseg.training.loop import TrainingConfig, curves_path_for, state_path_for, train

LOVEDA = preset_card("loveda")
IOU_COLOR = (217, 72, 1)  # "#d94801", the mIoU line
F1_COLOR = (35, 139, 69)  # "#238b45", the mean F1 line


@pytest.fixture(scope="module")
def tiles(shared_data, tmp_path_factory) -> Path:
    return loveda_corners(shared_data, tmp_path_factory.mktemp("loveda_curves"), 128)


def pixels_of(path, color) -> int:
    image = (imread(path)[..., :3] * 255).round().astype(np.uint8)
    return int(np.all(image == color, axis=-1).sum())


def history(epochs: int, validation: bool) -> list[dict]:
    records = []
    for epoch in range(1, epochs + 1):
        losses = [2.0 / (epoch + i / 10) for i in range(10)]
        scores = {"mean_iou": 0.1 * epoch, "mean_f1": 0.12 * epoch} if validation else None
        records.append(
            {
                "step": 10 * epoch,
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "validation": scores,
                "step_losses": losses,
            }
        )
    return records


def test_validation_lines_are_drawn_only_with_validation_data(tmp_path):
    with_scores = plot_training_curves(history(4, True), tmp_path / "a.png", title="m.safetensors")
    without = plot_training_curves(history(4, False), tmp_path / "b.png", title="m.safetensors")
    assert pixels_of(with_scores, IOU_COLOR) > 200 and pixels_of(with_scores, F1_COLOR) > 200
    assert pixels_of(without, IOU_COLOR) == 0 and pixels_of(without, F1_COLOR) == 0
    assert Image.open(with_scores).info["Title"] == "m.safetensors training curves"


@pytest.mark.slow
def test_curves_are_redrawn_after_every_epoch_and_survive_resume(tiles, tmp_path):
    images = [tiles / "image_0.png", tiles / "image_1.png"]
    labels = [tiles / "label_0.png", tiles / "label_1.png"]
    # 2·128² px / (64²·2) = 4 steps per epoch; the state is saved at every epoch end
    config = TrainingConfig(crop=64, batch_size=2, steps=10, label_offset=1, device="cpu", state_every_s=0.0)
    output = tmp_path / "model.safetensors"
    curves = curves_path_for(output)
    seen, stopped = [], []

    def watch(event):
        if event.phase == "validate":  # the picture of this epoch is already written
            seen.append(curves.read_bytes())
        if event.phase == "train" and event.step == 6 and not stopped:  # stop the first run only
            stopped.append(event.step)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            images,
            labels,
            output,
            card=LOVEDA,
            backbone="resnet18",
            config=config,
            progress=watch,
            curves=curves,
        )
    assert len(seen) == 1 and curves.read_bytes() == seen[0]
    result = train(
        images,
        labels,
        output,
        card=LOVEDA,
        backbone="resnet18",
        config=config,
        resume=state_path_for(output),
        progress=watch,
        curves=curves,
    )
    assert len(seen) == 3 and len(set(seen)) == 3  # epochs end at steps 4, 8 and 10 (the last is short)
    assert [r["step"] for r in result.history] == [4, 8, 10]
    assert [len(r["step_losses"]) for r in result.history] == [
        4,
        4,
        2,
    ]  # the first epoch's came from the state
    assert result.history[-1]["step_losses"] == pytest.approx(result.losses[-2:], abs=1e-6)
    assert curves.read_bytes() == seen[-1]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_existing_curves_need_overwrite_before_any_work(tiles, tmp_path):
    output = tmp_path / "model.safetensors"
    curves_path_for(output).write_bytes(b"old")
    with pytest.raises(Exception, match="output exists; pass overwrite=True"):
        train(
            [tiles / "image_0.png"],
            [tiles / "label_0.png"],
            output,
            card=LOVEDA,
            curves=curves_path_for(output),
        )
    assert not output.exists() and curves_path_for(output).read_bytes() == b"old"


def test_geoseg_train_writes_curves_beside_the_checkpoint(tiles, tmp_path):
    output = tmp_path / "m.safetensors"
    args = [
        "train", "--images", tiles / "image_0.png", "--labels", tiles / "label_0.png", "--preset", "loveda",
        "--label-offset", "1", "--backbone", "resnet18", "--crop", "64", "--batch-size", "2", "--steps", "2",
        "--device", "cpu", "--json", "-o", output,
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    picture = tmp_path / "m.curves.png"
    assert json.loads(result.output.strip().splitlines()[-1])["curves"] == str(picture)
    assert Image.open(picture).size == (1300, 480)


def test_geoseg_train_without_matplotlib_warns_and_trains(tiles, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    output = tmp_path / "m.safetensors"
    args = [
        "train", "--images", tiles / "image_0.png", "--labels", tiles / "label_0.png", "--preset", "loveda",
        "--label-offset", "1", "--backbone", "resnet18", "--crop", "64", "--batch-size", "2", "--steps", "1",
        "--device", "cpu", "--quiet", "-o", output,
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "Warning: no training curves: drawing pictures needs matplotlib" in result.output
    assert result.output.strip().splitlines()[-1].startswith("resumable state:")  # no curves line after it
    assert output.is_file() and not (tmp_path / "m.curves.png").exists()


def test_validation_axis_of_a_single_epoch_has_only_whole_epoch_ticks():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from geoseg.plots.curves import _draw_scores

    axes = Figure().add_subplot()
    _draw_scores(axes, history(1, True))
    low, high = axes.get_xlim()
    visible = [t for t in axes.get_xticks() if low <= t <= high]
    assert visible == [1.0]


def test_a_loss_of_zero_throughout_is_drawn_without_a_warning(tmp_path):
    records = [{"step": 2, "epoch": 1, "loss": 0.0, "validation": None, "step_losses": [0.0, 0.0]}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "identical low and high ylims" reached the terminal
        path = plot_training_curves(records, tmp_path / "zero.png", title="m.safetensors")
    assert path.is_file()
