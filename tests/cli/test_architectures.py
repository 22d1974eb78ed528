"""MACU-Net and MAResU-Net through the whole command line: the authors' raw state dicts are converted, shown,
run over a small georeferenced scene and scored; both are trained; a card for another network is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from helpers import loveda_corners, write_scene
from rasterio.transform import from_origin

from geoseg.cli.main import cli
from geoseg.model.build import build_model
from geoseg.model.presets import preset_card


def _invoke(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


def _authors_state_dict(architecture: str, path, seed: int = 0):
    """A netG.pth as the authors' multi-GPU training writes it: a raw OrderedDict with ``module.`` keys."""
    torch.manual_seed(seed)
    model = build_model(architecture, 7).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gamma"):
                module.gamma.fill_(0.5)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    write_scene(
        path, width=150, height=100, crs="EPSG:32633", transform=from_origin(500000, 4600000, 0.3, 0.3)
    )
    return path


@pytest.mark.parametrize(
    "architecture, label", [("macunet", "MACU-Net"), ("maresunet", "MAResU-Net (resnet34)")]
)
@pytest.mark.slow
def test_a_converted_sibling_predicts_and_evaluates_like_manet(tmp_path, scene, architecture, label):
    raw = _authors_state_dict(architecture, tmp_path / "netG.pth")
    converted = tmp_path / f"{architecture}.safetensors"
    result = _invoke("convert", raw, "-o", converted, "--preset", "loveda")
    assert result.exit_code == 0, result.output
    assert f"Wrote {converted}: {label}, 7 classes (background, building" in result.output

    info = json.loads(_invoke("info", converted, "--json").output)
    assert info["architecture"] == architecture and info["classes"] == 7
    assert info["card"]["mean"] == [0.0, 0.0, 0.0] and info["card"]["std"] == [1.0, 1.0, 1.0]

    classes = tmp_path / "classes.tif"
    result = _invoke(
        "predict", scene, "-o", classes, "-m", converted, "--tile", "64", "--overlap", "16",
        "--tta", "flip", "--device", "cpu", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert (record["width"], record["height"]) == (150, 100)
    with rasterio.open(scene) as src, rasterio.open(classes) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        predicted = out.read(1)
    assert set(np.unique(predicted)) <= set(range(7))

    scores = _invoke("evaluate", classes, classes, "--preset", "loveda", "--json")
    assert scores.exit_code == 0, scores.output
    assert json.loads(scores.output)["overall_accuracy"] == 1.0


def test_predict_with_a_card_for_another_network_is_one_line_exit_1(tmp_path, scene):
    raw = _authors_state_dict("macunet", tmp_path / "netG.pth")
    card = tmp_path / "card.json"
    card.write_text(preset_card("loveda", None, architecture="maresunet").to_json())
    result = _invoke("predict", scene, "-o", tmp_path / "c.tif", "-m", raw, "--card", card, "--device", "cpu")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "card says architecture maresunet but the weights are a MACU-Net" in result.output
    assert not (tmp_path / "c.tif").exists()


@pytest.fixture(scope="module")
def tiles(shared_data, tmp_path_factory):
    return loveda_corners(shared_data, tmp_path_factory.mktemp("loveda_arch"), 64)


def _train(tiles, output, *extra):
    return _invoke(
        "train", "--images", tiles / "image_0.png", "--labels", tiles / "label_0.png", "--preset", "loveda",
        "--label-offset", "1", "--crop", "64", "--batch-size", "2", "--steps", "2", "--device", "cpu",
        "--json", "-o", output, *extra,
    )  # fmt: skip


def test_train_architecture_macunet_writes_a_macunet_checkpoint_with_the_authors_scaling(tiles, tmp_path):
    output = tmp_path / "macunet.safetensors"
    result = _train(tiles, output, "--architecture", "macunet")
    assert result.exit_code == 0, result.output
    info = json.loads(_invoke("info", output, "--json").output)
    assert (info["architecture"], info["backbone"], info["parameters"]) == (
        "macunet",
        None,
        5_150_912 + 240 * 3 + 17 * 7,
    )
    assert info["card"]["std"] == [1.0, 1.0, 1.0]
    assert info["card"]["description"].startswith("MACU-Net trained with geoseg")


@pytest.mark.slow
def test_train_maresunet_starts_from_a_torchvision_resnet34_you_hold(tiles, tmp_path):
    import torchvision

    resnet = torchvision.models.resnet34(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet34.pth")
    output = tmp_path / "maresunet.safetensors"
    result = _train(tiles, output, "--architecture", "maresunet", "--init", tmp_path / "resnet34.pth")
    assert result.exit_code == 0, result.output
    info = json.loads(_invoke("info", output, "--json").output)
    assert (info["architecture"], info["backbone"]) == ("maresunet", "resnet34")
    encoder_tensors = len(resnet.state_dict()) - 2  # all but fc.weight and fc.bias
    assert info["card"]["training"]["initial_weights"] == f"resnet34.pth ({encoder_tensors} of 370 tensors)"


def test_train_refuses_a_backbone_macunet_does_not_have(tiles, tmp_path):
    result = _train(tiles, tmp_path / "m.safetensors", "--architecture", "macunet", "--backbone", "resnet18")
    assert result.exit_code == 2  # a usage error, naming the two options the user gave
    assert "--backbone resnet18 does not fit --architecture macunet" in result.output
    assert not (tmp_path / "m.safetensors").exists()
