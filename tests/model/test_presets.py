"""The bundled demonstration model: a complete card, the published ResNet-50 network, and the demo's job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import write_geotiff
from rasterio.windows import Window

from geoseg.cli.main import cli
from geoseg.model.checkpoint import default_checkpoint_path, load_checkpoint
from geoseg.model.presets import preset_card

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "netherlands_0p25m_epsg28992.tif"


@pytest.fixture(scope="module")
def bundled():
    return load_checkpoint(default_checkpoint_path())


def test_bundled_model_is_resnet50_manet_with_a_complete_loveda_card(bundled):
    model, card = bundled
    assert default_checkpoint_path().name == "manet_r50_loveda_demo.safetensors"
    assert card.backbone == "resnet50"
    # 35,860,622 with 6 classes, plus one output channel of the last 3x3 convolution (32*9 + 1)
    assert sum(p.numel() for p in model.parameters()) == 35_860_622 + 32 * 9 + 1
    loveda = preset_card("loveda")
    assert card.classes == loveda.classes
    assert card.bands == ["red", "green", "blue"]
    assert card.gsd == 0.3
    assert "CC BY-NC-SA 4.0" in card.license
    held_out = card.accuracy["held_out"]
    assert 0.0 <= held_out["overall_accuracy"] <= 1.0
    assert {"mean_f1", "mean_iou", "per_class_iou", "dataset", "method"} <= set(held_out)
    assert card.training["steps"] > 0


@pytest.mark.slow
def test_predict_without_a_model_uses_the_bundled_one_and_keeps_the_grid(tmp_path, bundled):
    """A 256 px corner of the sample scene, one 256 px tile: the real network, end to end."""
    corner = tmp_path / "corner.tif"
    with rasterio.open(SAMPLE) as src:
        window = Window(0, 0, 256, 256)
        profile = src.profile | {"width": 256, "height": 256, "transform": src.window_transform(window)}
        profile.update(compress="deflate", photometric="rgb")
        write_geotiff(corner, src.read(window=window), **profile)
    out = tmp_path / "corner.classes.tif"
    args = ["predict", str(corner), "-o", str(out), "--tile", "256", "--overlap", "0", "--json", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["tiles"] == 1
    assert sum(record["class_fractions"].values()) == pytest.approx(1.0)
    with rasterio.open(corner) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (src.crs, src.transform, 256, 256)
        classes = dst.read(1)
    assert classes.max() < 7
    explicit = tmp_path / "explicit.tif"
    args = ["predict", str(corner), "-o", str(explicit), "-m", str(default_checkpoint_path())]
    result = CliRunner().invoke(cli, [*args, "--tile", "256", "--overlap", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    with rasterio.open(explicit) as dst:
        np.testing.assert_array_equal(dst.read(1), classes)
