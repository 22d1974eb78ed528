"""``geoseg convert``: both foreign formats become geoseg checkpoints; bad input is one line, exit 1 or 2."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.model.checkpoint import load_checkpoint
from geoseg.model.manet import build_manet


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def raw_state(tmp_path):
    torch.manual_seed(0)
    model = build_manet(6, "resnet18")
    path = tmp_path / "manet_raw.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


def _lightning(tmp_path, model):
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("firstconv.", "backbone.conv1.").replace("firstbn.", "backbone.bn1.")
        for i in range(1, 5):
            key = key.replace(f"encoder{i}.", f"backbone.layer{i}.")
        state[f"net.{key}"] = value
    path = tmp_path / "epoch=41.ckpt"
    torch.save({"epoch": 41, "global_step": 1, "state_dict": state, "optimizer_states": []}, path)
    return path


def test_convert_raw_state_dict_with_preset_then_info_shows_the_card(runner, raw_state, tmp_path):
    out = tmp_path / "vaihingen.safetensors"
    result = runner.invoke(cli, ["convert", str(raw_state), "-o", str(out), "--preset", "vaihingen"])
    assert result.exit_code == 0, result.output
    assert "MANet (resnet18), 6 classes (impervious surfaces, building" in result.output
    info = runner.invoke(cli, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    described = json.loads(info.output)
    assert described["format"] == "geoseg"
    assert described["backbone"] == "resnet18"
    assert described["parameters"] == sum(p.numel() for p in build_manet(6, "resnet18").parameters())
    assert described["card"]["bands"] == ["nir", "red", "green"]
    assert described["card"]["classes"][4] == {"name": "car", "color": [255, 255, 0]}


def test_convert_geoseg_lightning_checkpoint_with_a_card_file(runner, tmp_path):
    model = build_manet(3, "resnet18")
    source = _lightning(tmp_path, model)
    card = tmp_path / "card.json"
    classes = [{"name": n, "color": [i * 80, 0, 0]} for i, n in enumerate(["other", "water", "roof"])]
    card.write_text(json.dumps({"classes": classes, "bands": ["red", "green", "blue"], "gsd": 0.2}))
    out = tmp_path / "mine.safetensors"
    result = runner.invoke(cli, ["convert", str(source), "-o", str(out), "--card", str(card), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["class_names"] == ["other", "water", "roof"]
    loaded, loaded_card = load_checkpoint(out)
    assert loaded_card.gsd == 0.2
    torch.testing.assert_close(loaded.state_dict()["finalconv3.bias"], model.state_dict()["finalconv3.bias"])


def test_convert_of_a_foreign_checkpoint_without_preset_or_card_is_one_line(runner, raw_state, tmp_path):
    out = tmp_path / "x.safetensors"
    result = runner.invoke(cli, ["convert", str(raw_state), "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "carries no class names, colours or bands; pass --preset NAME or --card FILE" in result.output
    assert not out.exists()


def test_converting_a_geoseg_checkpoint_to_half_keeps_its_whole_card(runner, raw_state, tmp_path):
    full = tmp_path / "full.safetensors"
    half = tmp_path / "half.safetensors"
    card = tmp_path / "card.json"
    classes = [{"name": f"c{i}", "color": [i, 0, 0]} for i in range(6)]
    card.write_text(json.dumps({"classes": classes, "bands": ["red", "green", "blue"], "license": "CC0-1.0"}))
    assert (
        runner.invoke(cli, ["convert", str(raw_state), "-o", str(full), "--card", str(card)]).exit_code == 0
    )

    result = runner.invoke(cli, ["convert", str(full), "-o", str(half), "--half"])

    assert result.exit_code == 0, result.output
    (_, full_card), (half_model, half_card) = load_checkpoint(full), load_checkpoint(half)
    assert half_card.to_json() == full_card.to_json()
    assert half.stat().st_size < 0.6 * full.stat().st_size
    full_model, _ = load_checkpoint(full)
    weight = "finalconv3.weight"
    torch.testing.assert_close(
        half_model.state_dict()[weight], full_model.state_dict()[weight].half().float()
    )


def test_unknown_preset_is_a_usage_error(runner, raw_state, tmp_path):
    result = runner.invoke(
        cli, ["convert", str(raw_state), "-o", str(tmp_path / "x.st"), "--preset", "isprs"]
    )
    assert result.exit_code == 2
    assert "'isprs' is not one of" in result.output


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"not a model at all", "not a checkpoint"),
        (b"PK\x03\x04truncated zip", "corrupt or truncated"),
    ],
)
def test_bad_checkpoint_files_give_one_line_and_exit_1(runner, tmp_path, content, message):
    source = tmp_path / "bad.pth"
    source.write_bytes(content)
    out = tmp_path / "out.safetensors"
    result = runner.invoke(cli, ["convert", str(source), "-o", str(out), "--preset", "potsdam"])
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.strip().count("\n") == 0
    assert "Traceback" not in result.output
    assert not out.exists()


def test_card_contradicting_the_weights_exits_1(runner, raw_state, tmp_path):
    card = tmp_path / "five.json"
    card.write_text(json.dumps({"classes": [{"name": f"c{i}", "color": [i, i, i]} for i in range(5)]}))
    result = runner.invoke(
        cli, ["convert", str(raw_state), "-o", str(tmp_path / "o.safetensors"), "--card", str(card)]
    )
    assert result.exit_code == 1
    assert "lists 5 classes" in result.output and "6 output channels" in result.output


def test_existing_output_needs_overwrite(runner, raw_state, tmp_path):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    args = ["convert", str(raw_state), "-o", str(out), "--preset", "loveda"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert "output exists; pass --overwrite" in result.output
    assert out.read_bytes() == b"keep me"
    # loveda has 7 classes, the weights 6: refused, and the existing file is untouched
    result = runner.invoke(cli, [*args, "--overwrite"])
    assert result.exit_code == 1 and "6 output channels" in result.output
    assert out.read_bytes() == b"keep me"
    result = runner.invoke(cli, [*args[:-1], "vaihingen", "--overwrite"])
    assert result.exit_code == 0
    assert load_checkpoint(out)[1].name == "vaihingen"


def test_convert_refuses_to_write_over_its_source(tmp_path):
    """``convert model.safetensors -o model.safetensors -f --preset loveda`` replaced the checkpoint it read
    (and its card, training record and licence with the preset's)."""
    from helpers import write_small_checkpoint

    source = write_small_checkpoint(tmp_path / "model.safetensors")
    before = source.read_bytes()

    result = CliRunner().invoke(cli, ["convert", str(source), "-o", str(source), "-f", "--preset", "loveda"])

    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines()[-1]
        == f"Error: {source}: is also an input of this command; write the output under another name"
    )
    assert source.read_bytes() == before
