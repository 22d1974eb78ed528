"""``geoseg info MODEL --stac``: a STAC Item with the MLM extension, from the checkpoint's card."""

from __future__ import annotations

import json

import pystac
import pytest
import torch
from click.testing import CliRunner
from helpers import stac_schema_errors
from pystac.extensions.mlm import MLMExtension

from geoseg.cli.main import cli
from geoseg.errors import CardError
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import save_checkpoint
from geoseg.model.manet import build_manet
from geoseg.stac.mlm import model_item, read_model_file, validate_model_item, value_scaling


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    card = ModelCard(
        classes=[ClassInfo("water", (0, 0, 255)), ClassInfo("building", (255, 16, 0))],
        bands=["nir", "red", "green"],
        backbone="resnet18",
        value_range=(0.0, 1000.0),
        mean=[0.5, 0.25, 0.125],
        std=[0.5, 0.25, 0.2],
        tile_size=256,
        overlap=64,
        gsd=0.5,
        name="irrg-demo",
    )
    path = tmp_path_factory.mktemp("model") / "net.safetensors"
    torch.manual_seed(0)
    network = build_manet(2, "resnet18", in_channels=3)
    save_checkpoint(network, card, path)
    return path, card, sum(p.numel() for p in network.parameters())


def test_info_stac_prints_a_valid_mlm_item(checkpoint):
    path, card, parameters = checkpoint
    result = CliRunner().invoke(cli, ["info", str(path), "--stac"])
    assert result.exit_code == 0, result.output
    item = json.loads(result.output)
    validate_model_item(item)
    assert stac_schema_errors(item) == []
    assert item["type"] == "Feature" and item["id"] == "irrg-demo" and item["geometry"] is None
    assert "https://stac-extensions.github.io/mlm/v1.4.0/schema.json" in item["stac_extensions"]
    mlm = MLMExtension.ext(pystac.Item.from_dict(item))
    assert (mlm.mlm_name, mlm.architecture, mlm.tasks) == (
        "irrg-demo",
        "MANet (resnet18)",
        ["semantic-segmentation"],
    )
    assert (mlm.framework, mlm.total_parameters) == ("PyTorch", parameters)
    assert "mlm:pretrained" not in item["properties"]  # the card has no training record: unknown
    assert (
        item["properties"]["bands"]
        == item["assets"]["model"]["bands"]
        == [
            {"name": "nir"},
            {"name": "red"},
            {"name": "green"},
        ]
    )
    (model_input,) = mlm.input
    assert model_input.bands == ["nir", "red", "green"]
    assert model_input.input.shape == [-1, 3, 256, 256]
    assert model_input.input.dim_order == ["batch", "bands", "height", "width"]
    assert model_input.input.data_type == "float32"
    (output,) = mlm.output
    assert output.result.shape == [-1, 2, 256, 256]
    assert [(c.value, c.name, c.description, c.color_hint) for c in output.classes] == [
        (0, "water", "water", "0000FF"),
        (1, "building", "building", "FF1000"),
    ]
    assert item["properties"]["gsd"] == 0.5
    asset = item["assets"]["model"]
    assert asset["href"] == path.resolve().as_uri() and asset["mlm:artifact_type"] == "safetensors"
    assert "mlm:model" in asset["roles"]


def test_value_scaling_folds_the_value_range_into_one_z_score_per_band(checkpoint):
    # ((x - 0) / 1000 - 0.25) / 0.25 == (x - 250) / 250
    scaling = value_scaling(checkpoint[1])
    assert scaling == [
        {"type": "z-score", "mean": 500.0, "stddev": 500.0},
        {"type": "z-score", "mean": 250.0, "stddev": 250.0},
        {"type": "z-score", "mean": 125.0, "stddev": 200.0},
    ]
    x = 730.0
    for m, s, z in zip(checkpoint[1].mean, checkpoint[1].std, scaling, strict=True):
        assert (x / 1000 - m) / s == pytest.approx((x - z["mean"]) / z["stddev"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i["properties"].pop("datetime"), "is not valid: "),
        (lambda i: i["properties"].update({"mlm:tasks": ["painting"]}), "unknown task 'painting'"),
        (
            lambda i: i["properties"]["mlm:input"][0]["input"].update({"shape": [-1, 3, 256]}),
            "differ in length",
        ),
        (lambda i: i["properties"]["mlm:output"][0].update({"classification:classes": []}), "classification"),
        (lambda i: i["properties"]["mlm:output"][0]["classification:classes"][0].pop("description"), "descr"),
        (lambda i: i["properties"].pop("bands"), r"input bands \['green', 'nir', 'red'\] are not defined"),
    ],
)
def test_a_malformed_item_is_refused(checkpoint, change, message):
    path, card, parameters = checkpoint
    item = model_item(read_model_file(path), href=path.name)
    change(item)
    with pytest.raises(CardError, match=message):
        validate_model_item(item)


def test_info_stac_on_a_raster_or_foreign_checkpoint_is_one_line(checkpoint, tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save(build_manet(2, "resnet18").state_dict(), foreign)
    result = CliRunner().invoke(cli, ["info", str(foreign), "--stac"])
    assert result.exit_code == 1
    assert "a foreign model has no card to describe; convert it first" in result.output
    result = CliRunner().invoke(cli, ["info", "sample_data/netherlands_0p25m_epsg28992.tif", "--stac"])
    assert result.exit_code == 1 and "not a checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_info_stac_o_writes_an_item_whose_href_resolves_from_its_folder(checkpoint, tmp_path):
    path, card, parameters = checkpoint
    out = tmp_path / "catalog" / "items" / "net.item.json"
    out.parent.mkdir(parents=True)
    result = CliRunner().invoke(cli, ["info", str(path), "--stac", "-o", str(out)])
    assert result.exit_code == 0, result.output
    item = json.loads(out.read_text())
    assert stac_schema_errors(item) == []
    href = item["assets"]["model"]["href"]
    assert not href.startswith(("/", "file:")) and (out.parent / href).resolve() == path.resolve()
    result = CliRunner().invoke(cli, ["info", str(path), "--stac", "-o", str(out)])
    assert result.exit_code == 1 and "exists" in result.output


@pytest.mark.parametrize(
    "initial, expected",
    [
        ("random (no pre-trained encoder)", {"mlm:pretrained": False, "mlm:pretrained_source": None}),
        ("resnet34-imagenet.pth (212 of 440 tensors)", {"mlm:pretrained": True}),
    ],
)
def test_pretrained_follows_the_cards_training_record(checkpoint, tmp_path, initial, expected):
    path, card, parameters = checkpoint
    trained = ModelCard.from_dict({**card.to_dict(), "training": {"initial_weights": initial}})
    out = tmp_path / "trained.safetensors"
    save_checkpoint(build_manet(2, "resnet18", in_channels=3), trained, out)
    item = model_item(read_model_file(out), href=out.name)
    assert {k: v for k, v in item["properties"].items() if k.startswith("mlm:pretrained")} == expected
    assert stac_schema_errors(item) == []


def test_the_description_joins_the_cards_texts_as_sentences_with_one_full_stop_each(checkpoint, tmp_path):
    path, card, parameters = checkpoint
    described = ModelCard.from_dict(
        {
            **card.to_dict(),
            "description": "MANet (resnet18) trained with geoseg on 1 labelled image(s)",
            "data": "LoveDA (Wang et al. 2021), urban scenes.",
            "license": "CC BY 4.0 ",
        }
    )
    out = tmp_path / "described.safetensors"
    save_checkpoint(build_manet(2, "resnet18", in_channels=3), described, out)
    item = model_item(read_model_file(out), href=out.name)
    assert item["properties"]["description"] == (
        "MANet (resnet18) trained with geoseg on 1 labelled image(s). "
        "Training data: LoveDA (Wang et al. 2021), urban scenes. Terms: CC BY 4.0."
    )


@pytest.mark.parametrize(
    "suffix, framework, artifact", [(".onnx", "ONNX", "onnx"), (".pt2", "PyTorch", "torch.export.save")]
)
@pytest.mark.slow
def test_info_stac_describes_geosegs_own_exports(checkpoint, tmp_path, suffix, framework, artifact):
    from geoseg.export.exporter import export_model

    path, card, parameters = checkpoint
    exported = tmp_path / f"net{suffix}"
    export_model(path, exported)
    result = CliRunner().invoke(cli, ["info", str(exported), "--stac"])
    assert result.exit_code == 0, result.output
    item = json.loads(result.output)
    assert stac_schema_errors(item) == []
    properties = item["properties"]
    assert (properties["mlm:framework"], item["assets"]["model"]["mlm:artifact_type"]) == (
        framework,
        artifact,
    )
    (model_input,) = properties["mlm:input"]
    assert model_input["value_scaling"] is None  # the export scales and normalises inside
    assert properties["mlm:output"][0]["name"] == "probabilities"
    assert item["assets"]["model"]["href"] == exported.resolve().as_uri()
