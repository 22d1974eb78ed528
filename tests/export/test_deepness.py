"""``geoseg export --for deepness``: an ONNX model the QGIS Deepness plugin loads and runs as geoseg does.

Deepness's contract (github.com/PUTvision/qgis-plugin-deepness, ``deepness/processing/models/model_base.py``
and ``segmentor.py``): every metadata value is read with ``json.loads``; the tile size is the input's last
dimension; tiles are fed as ``(uint8 / 255 - mean) / std``, NCHW; the class is the argmax of the output.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import rasterio
import torch
from click.testing import CliRunner
from helpers import write_geotiff

from geoseg.cli.main import cli
from geoseg.errors import ConfigurationError
from geoseg.export.exporter import export_model
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import default_checkpoint_path, load_checkpoint, save_checkpoint
from geoseg.model.manet import build_manet
from geoseg.model.normalize import normalize

SCENE = "sample_data/netherlands_0p25m_epsg28992.tif"


def _checkpoint(path, classes=3, gsd=0.25, tile=64, overlap=16):
    torch.manual_seed(0)
    card = ModelCard(
        classes=[ClassInfo(f"class {i}", (i * 40, 90, 7)) for i in range(classes)],
        backbone="resnet18",
        tile_size=tile,
        overlap=overlap,
        gsd=gsd,
    )
    save_checkpoint(build_manet(classes, "resnet18").eval(), card, path)
    return path


def deepness_classes(model_path, tiles_nhwc: np.ndarray) -> np.ndarray:
    """Deepness's ModelBase.process and MapProcessorSegmentation._process_tile, re-implemented."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    (graph_input,) = session.get_inputs()
    assert isinstance(graph_input.shape[0], str)  # dynamic batch: the user picks it in the plugin
    assert graph_input.shape[-1] == graph_input.shape[-2] == tiles_nhwc.shape[1]
    mean = np.array(json.loads(meta["standardization_mean"]), dtype=np.float32)
    std = np.array(json.loads(meta["standardization_std"]), dtype=np.float32)
    x = np.float32(tiles_nhwc[..., : graph_input.shape[-3]] * 1.0 / 255.0)
    x = np.transpose((x - mean) / std, (0, 3, 1, 2))
    (result,) = session.run(None, {graph_input.name: x})
    result[result < json.loads(meta["seg_thresh"])] = 0.0
    return np.argmax(result, axis=1)


@pytest.mark.slow
def test_deepness_metadata_is_what_the_plugin_parses(tmp_path):
    source = _checkpoint(tmp_path / "net.safetensors")
    out = tmp_path / "deepness.onnx"
    result = CliRunner().invoke(cli, ["export", str(source), "-o", str(out), "--for", "deepness"])
    assert result.exit_code == 0, result.output
    assert "tiles of 64 px, for deepness" in result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    raw = session.get_modelmeta().custom_metadata_map
    meta = {k: json.loads(v) for k, v in raw.items() if not k.startswith("geoseg.")}
    assert str(meta["model_type"]).capitalize() == "Segmentor"
    assert meta["class_names"] == {"0": "class 0", "1": "class 1", "2": "class 2"}
    assert (meta["resolution"], meta["tile_size"], meta["tiles_size"]) == (25, 64, 64)
    assert meta["tiles_overlap"] == 25  # 16 of 64 px
    assert meta["standardization_mean"] == [0.0, 0.0, 0.0]
    assert meta["standardization_std"] == [1 / 255] * 3
    assert (meta["seg_thresh"], meta["seg_small_segment"]) == (0.0, 0)
    assert ModelCard.from_json(raw["geoseg.card"]).tile_size == 64  # geoseg's own card is kept
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    assert graph_input.shape[1:] == [3, 64, 64] and graph_output.shape[1:] == [3, 64, 64]


@pytest.mark.slow
def test_tile_option_fixes_the_deepness_tile_and_the_overlap_percentage(tmp_path):
    source = _checkpoint(tmp_path / "net.safetensors")
    out = tmp_path / "deepness.onnx"
    export_model(source, out, target="deepness", tile=96)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert session.get_inputs()[0].shape[2:] == [96, 96]
    assert (json.loads(meta["tile_size"]), json.loads(meta["tiles_overlap"])) == (96, 17)  # 16 of 96 px


@pytest.mark.parametrize(
    "kwargs, args, message",
    [
        ({"classes": 1}, [], "the model has 1 class(es); Deepness represents 2 to 254"),
        ({"gsd": None}, [], "the card has no gsd"),
        ({"overlap": 48}, ["--tile", "32"], "overlap of 48 px does not fit a tile of 32"),
        ({}, ["--logits"], "name the output .onnx and drop --logits"),
    ],
)
def test_a_model_deepness_cannot_represent_is_one_line(tmp_path, kwargs, args, message):
    source = _checkpoint(tmp_path / "net.safetensors", **kwargs)
    out = tmp_path / "deepness.onnx"
    result = CliRunner().invoke(cli, ["export", str(source), "-o", str(out), "--for", "deepness", *args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def _crop(size: int) -> np.ndarray:
    with rasterio.open(SCENE) as src:
        return src.read(window=((200, 200 + size), (300, 300 + size)))


def _deepness_agreement(checkpoint, tmp_path, tile: int) -> float:
    out = tmp_path / "deepness.onnx"
    export_model(checkpoint, out, target="deepness", tile=tile)
    crop = _crop(tile)
    theirs = deepness_classes(out, np.transpose(crop, (1, 2, 0))[None])[0]
    network, card = load_checkpoint(checkpoint)
    with torch.inference_mode():
        x = torch.from_numpy(crop[None])
        ours = network(normalize(x, card.value_range, card.mean, card.std)).argmax(1)[0].numpy()
    return float((theirs == ours).mean())


@pytest.mark.slow
def test_deepness_preprocessing_gives_geosegs_classes(tmp_path):
    source = _checkpoint(tmp_path / "net.safetensors", classes=6)
    assert _deepness_agreement(source, tmp_path, 128) >= 0.999


@pytest.mark.slow
def test_deepness_preprocessing_gives_the_bundled_models_classes_on_a_real_crop(tmp_path):
    assert _deepness_agreement(default_checkpoint_path(), tmp_path, 512) >= 0.999


@pytest.mark.slow
def test_predict_runs_a_deepness_export_and_refuses_another_tile(tmp_path):
    source = _checkpoint(tmp_path / "net.safetensors")
    out = tmp_path / "deepness.onnx"
    export_model(source, out, target="deepness")
    scene = tmp_path / "scene.tif"
    with rasterio.open(SCENE) as src:
        profile = {**src.profile, "width": 150, "height": 100}
        write_geotiff(scene, src.read(window=((0, 100), (0, 150))), **profile)
    result = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "a.tif"), "-m", str(out)])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "a.tif") as classes:
        assert classes.read(1).max() < 3
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-o", str(tmp_path / "b.tif"), "-m", str(out), "--tile", "96"]
    )
    assert result.exit_code == 1 and "takes tiles of 64x64 px only, got 96x96" in result.output


@pytest.mark.parametrize("target", [[], ["--for", "deepness"]])
def test_a_tile_the_network_cannot_take_names_the_parameter_in_python_and_the_flag_on_the_command_line(
    tmp_path, target
):
    """Before: export tile=100 said 'card: tile_size must be ...', a card the user never wrote."""
    source = _checkpoint(tmp_path / "net.safetensors")
    out = tmp_path / "model.onnx"
    wanted = "tile=100: give a positive multiple of 32 (MANet's input multiple), e.g. 96 or 128"
    with pytest.raises(ConfigurationError) as refused:
        export_model(source, out, tile=100, target="deepness" if target else None)
    assert str(refused.value) == wanted
    result = CliRunner().invoke(cli, ["export", str(source), "-o", str(out), "--tile", "100", *target])
    assert result.exit_code == 1 and result.stderr == f"Error: --{wanted.replace('=', ' ', 1)}\n"
    assert not out.exists()
