"""``geoseg export`` and the exported networks: parity with PyTorch on real tiles, the card inside, shapes.

A ResNet-18 MANet with random weights (attention gammas non-zero, so the kernel and channel attention count)
keeps the exports to seconds; tiles are real crops of the sample orthophoto.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
import torch
from click.testing import CliRunner
from helpers import write_geotiff

from geoseg.cli.main import cli
from geoseg.export.exporter import export_model
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import CARD_METADATA_KEY, save_checkpoint
from geoseg.model.manet import build_manet
from geoseg.model.normalize import normalize

SCENE = "sample_data/netherlands_0p25m_epsg28992.tif"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    network = build_manet(6, "resnet18").eval()
    for module in network.modules():
        if hasattr(module, "gamma"):
            torch.nn.init.constant_(module.gamma, 0.7)
    network.finalconv3.weight.data.mul_(100)  # logits of several units, so 1e-4 is a tight bound
    card = ModelCard(
        classes=[ClassInfo(f"class {i}", (i * 40, 255 - i * 40, 7)) for i in range(6)],
        backbone="resnet18",
        tile_size=64,
        overlap=16,
        name="test net",
    )
    path = tmp_path_factory.mktemp("model") / "net.safetensors"
    save_checkpoint(network, card, path)
    return path, network, card


@pytest.fixture(scope="module")
def tiles():
    """Real uint8 RGB crops as float32 (the export's input): a batch of two squares and one non-square."""
    with rasterio.open(SCENE) as src:
        square = src.read(window=((100, 164), (200, 264))), src.read(window=((500, 564), (600, 664)))
        wide = src.read(window=((300, 364), (40, 200)))
    return [torch.from_numpy(np.stack(square)).float(), torch.from_numpy(wide[None]).float()]


def _reference_logits(network, card, x):
    with torch.inference_mode():
        return network(normalize(x, card.value_range, card.mean, card.std))


@pytest.fixture(scope="module")
def onnx_logits(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "net.onnx"
    result = export_model(checkpoint[0], path, logits=True)
    assert result["format"] == "onnx" and result["outputs"] == "logits"
    return path


@pytest.mark.slow
def test_onnx_logits_match_pytorch_on_real_tiles(checkpoint, tiles, onnx_logits):
    _, network, card = checkpoint
    session = ort.InferenceSession(str(onnx_logits), providers=["CPUExecutionProvider"])
    for x in tiles:
        (logits,) = session.run(None, {"pixels": x.numpy()})
        reference = _reference_logits(network, card, x).numpy()
        assert logits.shape == reference.shape == (x.shape[0], 6, *x.shape[2:])
        assert np.abs(logits - reference).max() <= 1e-4
        assert np.abs(reference).max() > 1  # the comparison is not between two near-zero maps


@pytest.mark.slow
def test_onnx_carries_the_card_opset_and_dynamic_dims(checkpoint, onnx_logits):
    model = onnx.load(str(onnx_logits))
    metadata = {p.key: p.value for p in model.metadata_props}
    assert ModelCard.from_json(metadata[CARD_METADATA_KEY]) == checkpoint[2]
    assert metadata["geoseg.output"] == "logits"
    assert model.doc_string == "test net"
    assert {o.domain: o.version for o in model.opset_import}[""] >= 17
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "pixels" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[1].dim_value == 3
    assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3]))
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}  # attention and all: float32 in the graph
    assert not [i.name for i in model.graph.initializer if i.data_type in half]


@pytest.mark.slow
def test_info_describes_an_onnx_export_on_its_own(checkpoint, onnx_logits):
    result = CliRunner().invoke(cli, ["info", str(onnx_logits), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["format"] == "onnx" and record["returns"] == "logits" and record["opset"]["ai.onnx"] == 18
    assert ModelCard.from_dict(record["card"]) == checkpoint[2]
    (shape,) = record["inputs"].values()
    assert shape[1] == 3 and all(isinstance(d, str) for d in (shape[0], shape[2], shape[3]))
    (shape,) = record["outputs"].values()
    assert shape[1] == 6


@pytest.mark.slow
def test_pt2_logits_match_pytorch_and_carry_the_card(checkpoint, tiles, tmp_path):
    path = tmp_path / "net.pt2"
    export_model(checkpoint[0], path, logits=True)
    extra = {CARD_METADATA_KEY: "", "geoseg.output": ""}
    program = torch.export.load(str(path), extra_files=extra)
    assert ModelCard.from_json(extra[CARD_METADATA_KEY]) == checkpoint[2]
    assert extra["geoseg.output"] == "logits"
    module = program.module()
    for x in tiles:
        with torch.inference_mode():
            logits = module(x)
        reference = _reference_logits(checkpoint[1], checkpoint[2], x)
        assert torch.equal(torch.tensor(logits.shape), torch.tensor(reference.shape))
        assert (logits - reference).abs().max().item() <= 1e-4
    with pytest.raises(Exception, match="height_32|32"):
        module(torch.zeros(1, 3, 64, 80))  # width not a multiple of 32: refused by the shape constraint


@pytest.fixture(scope="module")
def onnx_probabilities(checkpoint, tmp_path_factory):
    """The default export, made on the command line: probabilities out."""
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "probs.onnx"
    result = CliRunner().invoke(cli, ["export", str(checkpoint[0]), "-o", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["probs.onnx"]  # no temporary file left
    return path, json.loads(result.output)


@pytest.mark.slow
def test_cli_export_onnx_outputs_probabilities(checkpoint, tiles, onnx_probabilities):
    path, record = onnx_probabilities
    assert record["output"] == str(path) and record["outputs"] == "probabilities" and record["opset"] == 18
    assert record["bands"] == ["red", "green", "blue"] and len(record["classes"]) == 6
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    assert session.get_modelmeta().custom_metadata_map["geoseg.output"] == "probabilities"
    for x in tiles:
        (probabilities,) = session.run(None, {"pixels": x.numpy()})
        reference = torch.softmax(_reference_logits(checkpoint[1], checkpoint[2], x), dim=1).numpy()
        assert np.abs(probabilities - reference).max() <= 1e-5
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


# --- geoseg predict -m MODEL.onnx -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 150x110 crop of the sample orthophoto with its georeferencing."""
    path = tmp_path_factory.mktemp("scene") / "crop.tif"
    window = rasterio.windows.Window(300, 200, 150, 110)
    with rasterio.open(SCENE) as src:
        profile = {**src.profile, "width": 150, "height": 110, "transform": src.window_transform(window)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        write_geotiff(path, src.read(window=window), **profile)
    return path


def _predict(scene, model, out, *args):
    result = CliRunner().invoke(
        cli,
        ["predict", str(scene), "-o", str(out), "-m", str(model), "--precision", "fp32", "--json", *args],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.slow
def test_predict_with_an_onnx_export_matches_the_checkpoint(checkpoint, onnx_probabilities, scene, tmp_path):
    from_checkpoint = _predict(scene, checkpoint[0], tmp_path / "a.tif", "--probabilities")
    from_onnx = _predict(scene, onnx_probabilities[0], tmp_path / "b.tif", "--probabilities")
    assert from_onnx["tiles"] == from_checkpoint["tiles"] > 4
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert (b.crs, b.transform, b.shape) == (a.crs, a.transform, a.shape)
        classes_a, classes_b = a.read(1), b.read(1)
    assert len(np.unique(classes_a)) > 1
    assert (classes_a != classes_b).mean() <= 1e-3  # only exact ties between two classes may flip
    with (
        rasterio.open(tmp_path / "a.probabilities.tif") as a,
        rasterio.open(tmp_path / "b.probabilities.tif") as b,
    ):
        difference = np.abs(a.read().astype(int) - b.read().astype(int))
    assert difference.max() <= 1


@pytest.mark.slow
def test_predict_with_an_onnx_model_without_card_asks_for_one(onnx_logits, scene, tmp_path):
    bare = onnx.load(str(onnx_logits))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    out = tmp_path / "classes.tif"
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-o", str(out), "-m", str(tmp_path / "bare.onnx")]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {tmp_path / 'bare.onnx'}: the ONNX model carries no geoseg card (not exported by "
        "'geoseg export'); pass --card FILE or --preset NAME"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("out.tflite", [], "unknown export format '.tflite'; name the output .onnx (onnxruntime) or .pt2"),
        ("out.onnx", ["--card", "missing.json"], "missing.json: card file not found"),
    ],
)
def test_cli_export_refuses_bad_requests_with_one_line(checkpoint, tmp_path, name, args, message):
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["export", str(checkpoint[0]), "-o", str(out), *args])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_export_of_a_foreign_checkpoint_without_card_fails_with_one_line(checkpoint, tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save(checkpoint[1].state_dict(), foreign)
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(cli, ["export", str(foreign), "-o", str(out)])
    assert result.exit_code == 1
    assert "pass --preset NAME or --card FILE" in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pth"]


def test_cli_export_refuses_an_existing_output(checkpoint, tmp_path):
    out = tmp_path / "out.pt2"
    out.write_bytes(b"keep me")
    result = CliRunner().invoke(cli, ["export", str(checkpoint[0]), "-o", str(out)])
    assert result.exit_code == 1 and "output exists; pass --overwrite" in result.output
    assert out.read_bytes() == b"keep me"
