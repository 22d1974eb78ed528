"""--resume: finished regions survive an interruption, the rerun computes only the others and gives the same
raster bit for bit; a changed option refuses to resume; without --resume nothing is left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import CARD, PixelNet, write_scene

import geoseg.inference.plan as planning
from geoseg.errors import ConfigurationError
from geoseg.inference.grid import TileGrid
from geoseg.inference.scene import predict_scene
from geoseg.model.card import ModelCard

TESTS = Path(__file__).resolve().parents[1]
WORK = ".out.tif.geoseg-work"


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """1300 x 1100 px in six regions of about one block each (the real minimum is ten tiles)."""
    monkeypatch.setattr(planning, "MIN_REGION_TILES", 1)
    monkeypatch.setattr(planning, "RESUME_REGION_PIXELS", 512 * 512)
    path = tmp_path / "scene.tif"
    write_scene(path, 1300, 1100, crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6))
    return path


class Interrupt:
    """A progress callback that presses Ctrl-C once ``share`` of the tiles are done."""

    def __init__(self, share: float):
        self.share = share

    def __call__(self, done: int, total: int) -> None:
        if done >= self.share * total:
            raise KeyboardInterrupt


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.read_masks(), src.profile, src.tags()


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2], strict=True)) and a[2:] == b[2:]


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import geoseg.device as device
import geoseg.inference.plan as planning
from conftest import PRETENDED_CPU
from helpers import CARD, PixelNet
from geoseg.inference.scene import predict_scene

planning.MIN_REGION_TILES, planning.RESUME_REGION_PIXELS = 1, 512 * 512
device.cpu_features = lambda: PRETENDED_CPU  # the CPU this process pretends: the manifest's precision


def kill_past_half(done, total):
    if done >= 0.5 * total:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a power cut


predict_scene(PixelNet(), CARD, {scene!r}, {output!r}, confidence_path={confidence!r}, device="cpu",
              resume=True, progress=kill_past_half)
"""


@pytest.mark.slow  # three runs over 600 tiles, one in a fresh interpreter: 20-60 s on two loaded cores
def test_a_run_killed_half_way_resumes_bit_identical_computing_fewer_tiles(scene, tmp_path):
    output, confidence = tmp_path / "out.tif", tmp_path / "out.confidence.tif"
    code = KILLED_RUN.format(
        tests=str(TESTS), scene=str(scene), output=str(output), confidence=str(confidence)
    )
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, timeout=300)
    assert killed.returncode == -9
    assert not output.exists() and not confidence.exists()  # no final name before the end
    records = sorted((tmp_path / WORK).glob("region-*.json"))
    assert 1 <= len(records) < 6

    resumed = predict_scene(
        PixelNet(), CARD, scene, output, confidence_path=confidence, device="cpu", resume=True
    )
    grid = TileGrid(1100, 1300, 64, 16, margin=8)  # the plan's: mirrored by 8 px
    regions = planning.plan_regions(grid, 1, resume=True)
    assert len(regions) == 6
    assert 0 < resumed.tiles < sum(grid.for_region(r).num_tiles for r in regions)  # only unfinished ones
    assert not (tmp_path / WORK).exists()  # removed after success
    whole = tmp_path / "whole.tif", tmp_path / "whole.confidence.tif"
    single = predict_scene(PixelNet(), CARD, scene, whole[0], confidence_path=whole[1], device="cpu")
    assert _same(_read(output), _read(whole[0])) and _same(_read(confidence), _read(whole[1]))
    assert resumed.class_fractions == single.class_fractions


def test_a_changed_option_refuses_to_resume_and_says_what_changed(scene, tmp_path):
    output = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt):
        predict_scene(PixelNet(), CARD, scene, output, device="cpu", resume=True, progress=Interrupt(0.5))
    manifest = json.loads((tmp_path / WORK / "manifest.json").read_text())
    assert manifest["options"]["overlap"] == 16 and len(manifest["regions"]) == 6
    with pytest.raises(ConfigurationError) as refused:
        predict_scene(PixelNet(), CARD, scene, output, device="cpu", resume=True, overlap=32, margin=8)
    message = str(refused.value)
    assert "cannot resume, the options overlap changed from 16 to 32" in message
    assert f"delete {tmp_path / WORK} or drop resume=True" in message and "\n" not in message
    with pytest.raises(ConfigurationError, match="the options border margin changed from 8 to 0"):
        predict_scene(PixelNet(), CARD, scene, output, device="cpu", resume=True, margin=0)
    with pytest.raises(ConfigurationError, match="the model changed"):
        predict_scene(PixelNet(seed=1), CARD, scene, output, device="cpu", resume=True)
    assert not output.exists()
    # without --resume the old parts are dropped and the run starts over
    predict_scene(PixelNet(), CARD, scene, output, device="cpu", overlap=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.qml",
        "out.tif",
        "out.tif.aux.xml",
        "scene.tif",
    ]


@pytest.mark.parametrize("resume", [False, True])
def test_ctrl_c_leaves_nothing_without_resume_and_the_finished_regions_with_it(scene, tmp_path, resume):
    with pytest.raises(KeyboardInterrupt):
        predict_scene(
            PixelNet(),
            CARD,
            scene,
            tmp_path / "out.tif",
            confidence_path=tmp_path / "out.confidence.tif",
            device="cpu",
            resume=resume,
            progress=Interrupt(0.5),
        )
    left = sorted(p.name for p in tmp_path.iterdir())
    if not resume:
        assert left == ["scene.tif"]
    else:
        assert left == [WORK, "scene.tif"]
        names = sorted(p.name for p in (tmp_path / WORK).iterdir())
        assert "manifest.json" in names and "region-00000.json" in names
        assert all(not n.startswith(".") for n in names)  # no temporary part of the interrupted region


def test_the_command_refuses_a_work_folder_of_another_model_in_one_line(tmp_path):
    """``geoseg predict --resume`` over parts computed by another network: exit 1, one line, parts kept."""
    import torch
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from geoseg.model.checkpoint import save_checkpoint
    from geoseg.model.manet import build_manet
    from geoseg.model.presets import preset_card

    card = ModelCard.from_dict(
        {**preset_card("loveda").to_dict(), "backbone": "resnet18", "tile_size": 64, "overlap": 16}
    )
    torch.manual_seed(0)
    checkpoint = tmp_path / "r18.safetensors"
    save_checkpoint(build_manet(card.num_classes, "resnet18"), card, checkpoint)
    scene = tmp_path / "scene.tif"
    write_scene(scene, 200, 150, crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6))
    output = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt):
        predict_scene(
            PixelNet(classes=card.num_classes), card, scene, output, device="cpu", resume=True,
            progress=Interrupt(0.0),
        )  # fmt: skip
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-o", str(output), "-m", str(checkpoint), "--device", "cpu", "--resume"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {output}: cannot resume, the model changed from ")
    assert result.stderr.count("\n") == 1 and "drop --resume" in result.stderr
    assert (tmp_path / WORK / "manifest.json").is_file() and not output.exists()
